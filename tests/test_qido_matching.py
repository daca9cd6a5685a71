"""QIDO-RS matching, table-driven per value representation, on SQLite and PostgreSQL, without HTTP."""
import contextlib
import hashlib
import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from service.search.qido_params import parse_query
from storage import Archive, Catalog, DiskStore
from storage.search import QueryError
from tests.conftest import postgres_schema

CHARSET_FILES = Path(pydicom.__file__).parent / "data" / "charset_files"

STUDIES = {
    "jane": dict(PatientName="Doe^Jane", PatientID="PAT-1", StudyDate="20240115", StudyTime="101530",
                 AccessionNumber="ACC_1%", ReferringPhysicianName="Smith^John", StudyDescription="CT THORAX",
                 modalities=("CT", "SR")),
    "john": dict(PatientName="Doe^John", PatientID="PAT-2", StudyDate="20230301", StudyTime="0800",
                 AccessionNumber="ACC-2", ReferringPhysicianName="Jones^Mary", StudyDescription="MR BRAIN",
                 modalities=("MR",)),
    "anna": dict(PatientName="DOEBLER^ANNA", PatientID="PAT-3", StudyDate="20240116", StudyTime="235959.123",
                 AccessionNumber="ACCX1", ReferringPhysicianName="Smith^Jonas", StudyDescription="PET/CT",
                 modalities=("CT", "PT")),
    "jurgen": dict(PatientName="Müller^Jürgen", PatientID="PAT-4", StudyDate="20221231", StudyTime="120000",
                   AccessionNumber="A_B", ReferringPhysicianName="", StudyDescription="Röntgen Thorax",
                   SpecificCharacterSet="ISO_IR 192", modalities=("DX",)),
}
CHARSET_STUDIES = {"yamada": "chrH31.dcm", "hong": "chrI2.dcm", "wang": "chrX1.dcm"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def searchable(request, tmp_path_factory):
    """An archive holding the studies above; yields (catalog, label of each study UID)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('qido') / 'catalog.sqlite'}"
        else:
            url = stack.enter_context(postgres_schema("q"))
        catalog = Catalog(url)
        catalog.create_schema()
        stack.callback(catalog.dispose)
        archive = Archive(DiskStore(tmp_path_factory.mktemp("blobs")), catalog)
        yield catalog, _store_studies(archive)


def _store_studies(archive: Archive) -> dict[str, str]:
    labels = {}
    for label, spec in STUDIES.items():
        spec = dict(spec)
        modalities = spec.pop("modalities")
        study = generate_uid()
        labels[study] = label
        patient_name, patient_id = spec.pop("PatientName"), spec.pop("PatientID")
        for number, modality in enumerate(modalities, 1):
            data = ct_instance(study, generate_uid(), number=number, rows=8, columns=8, series_number=number,
                               patient_name=patient_name, patient_id=patient_id, Modality=modality, **spec)
            assert archive.store(io.BytesIO(data), hashlib.sha256(data).hexdigest()).stored
    for label, name in CHARSET_STUDIES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(CHARSET_FILES / name)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        assert archive.store(io.BytesIO(data), hashlib.sha256(data).hexdigest()).stored
        labels[str(ds.StudyInstanceUID)] = label
    return labels


def found(searchable, params, level="study"):
    catalog, labels = searchable
    query, _ = parse_query(level, list(params.items()), 1000)
    rows, _ = catalog.search(query)
    return sorted(labels[row["StudyInstanceUID"]] for row in rows)


ALL = sorted([*STUDIES, *CHARSET_STUDIES])


@pytest.mark.parametrize("params, expected", [
    ({}, ALL),
    # PN: exact, wildcards, case-insensitive, groups
    ({"PatientName": "Doe^Jane"}, ["jane"]),
    ({"PatientName": "doe^jane"}, ["jane"]),
    ({"PatientName": "Doe"}, []),
    ({"PatientName": "Doe*"}, ["anna", "jane", "john"]),
    ({"PatientName": "Doe^J*"}, ["jane", "john"]),
    ({"PatientName": "Doe^Jo?n"}, ["john"]),
    ({"PatientName": "*^J*"}, ["jane", "john", "jurgen"]),
    ({"00100010": "MÜLLER*"}, ["jurgen"]),
    ({"PatientName": "Yamada^Tarou"}, ["yamada"]),
    ({"PatientName": "山田^太郎"}, ["yamada"]),
    ({"PatientName": "山田*"}, ["yamada"]),
    ({"PatientName": "やまだ^たろう"}, ["yamada"]),
    ({"PatientName": "홍^길동"}, ["hong"]),
    ({"PatientName": "王*"}, ["wang"]),
    ({"PatientName": "*"}, ALL),
    ({"PatientName": ""}, ALL),
    # fuzzy: any component, by prefix, case-insensitive
    ({"PatientName": "jan", "fuzzymatching": "true"}, ["jane"]),
    ({"PatientName": "jo doe", "fuzzymatching": "true"}, ["john"]),
    ({"PatientName": "anna", "fuzzymatching": "true"}, ["anna"]),
    ({"PatientName": "tarou", "fuzzymatching": "true"}, ["yamada"]),
    ({"PatientName": "太郎", "fuzzymatching": "true"}, ["yamada"]),
    ({"PatientName": "doe", "fuzzymatching": "true"}, ["anna", "jane", "john"]),  # DOEBLER starts with DOE
    ({"ReferringPhysicianName": "smith", "fuzzymatching": "true"}, ["anna", "jane"]),
    ({"ReferringPhysicianName": "Smith^Jo*"}, ["anna", "jane"]),
    # strings: exact, wildcards, case-sensitive, data holding % and _
    ({"PatientID": "PAT-2"}, ["john"]),
    ({"PatientID": "pat-2"}, []),
    ({"PatientID": "PAT-1,PAT-3"}, ["anna", "jane"]),
    ({"AccessionNumber": "ACC_1%"}, ["jane"]),
    ({"AccessionNumber": "ACC_*"}, ["jane"]),
    ({"AccessionNumber": "ACC?1*"}, ["anna", "jane"]),
    ({"AccessionNumber": "A_B"}, ["jurgen"]),
    ({"AccessionNumber": "A?B"}, ["jurgen"]),
    ({"AccessionNumber": "ACC%"}, []),
    ({"StudyDescription": "*THORAX"}, ["jane"]),
    ({"StudyDescription": "Röntgen*"}, ["jurgen"]),
    ({"StudyDescription": "PET/CT"}, ["anna"]),
    # dates and times: single values and ranges
    ({"StudyDate": "20240115"}, ["jane"]),
    ({"StudyDate": "20240101-20241231"}, ["anna", "jane"]),
    ({"StudyDate": "20240116-"}, ["anna"]),
    ({"StudyDate": "-20230301"}, ["john", "jurgen"]),
    ({"StudyTime": "1000-1100"}, ["jane"]),
    ({"StudyTime": "2359-"}, ["anna"]),
    ({"StudyTime": "-0800"}, ["john"]),
    # UIDs: single and lists
    # multi-valued ModalitiesInStudy, and Modality at study level as viewers send it
    ({"ModalitiesInStudy": "CT"}, ["anna", "jane"]),
    ({"ModalitiesInStudy": "SR"}, ["jane"]),
    ({"ModalitiesInStudy": "MR\\PT"}, ["anna", "john"]),
    ({"Modality": "MR,DX"}, ["john", "jurgen"]),
    ({"ModalitiesInStudy": "C*"}, ["anna", "jane"]),
    # the stored counts
    ({"NumberOfStudyRelatedSeries": "2"}, ["anna", "jane"]),
    ({"NumberOfStudyRelatedInstances": "1"}, ["hong", "john", "jurgen", "wang", "yamada"]),
    # combinations
    ({"PatientName": "Doe*", "ModalitiesInStudy": "CT", "StudyDate": "20240115"}, ["jane"]),
])
def test_study_matching(searchable, params, expected):
    assert found(searchable, params) == expected


def test_uid_lists(searchable):
    catalog, labels = searchable
    uid = {label: study for study, label in labels.items()}
    assert found(searchable, {"StudyInstanceUID": uid["jane"]}) == ["jane"]
    assert found(searchable, {"StudyInstanceUID": f"{uid['jane']}\\{uid['anna']}"}) == ["anna", "jane"]
    assert found(searchable, {"0020000D": f"{uid['john']},{uid['wang']}"}) == ["john", "wang"]


def test_series_and_instance_levels(searchable):
    assert found(searchable, {"Modality": "CT"}, level="series") == ["anna", "jane"]
    assert found(searchable, {"Modality": "CT", "PatientName": "doe^jane"}, level="series") == ["jane"]
    assert found(searchable, {"SeriesNumber": "2"}, level="series") == ["anna", "jane"]
    assert found(searchable, {"InstanceNumber": "2", "Modality": "PT"}, level="instance") == ["anna"]


def test_computed_attributes(searchable):
    catalog, labels = searchable
    query, _ = parse_query("study", [("PatientID", "PAT-1"), ("includefield", "SOPClassesInStudy")], 1000)
    [row], more = catalog.search(query)
    assert not more
    assert row["ModalitiesInStudy"] == ["CT", "SR"]
    assert row["NumberOfStudyRelatedSeries"] == 2 and row["NumberOfStudyRelatedInstances"] == 2
    assert row["SOPClassesInStudy"] == ["1.2.840.10008.5.1.4.1.1.2"]
    query, _ = parse_query("series", [("PatientID", "PAT-3")], 1000)
    rows, _ = catalog.search(query)
    assert [r["NumberOfSeriesRelatedInstances"] for r in rows] == [1, 1]


def test_limit_offset_and_stable_order(searchable):
    catalog, labels = searchable
    everything = [r["StudyInstanceUID"] for r in catalog.search(parse_query("study", [], 1000)[0])[0]]
    assert len(everything) == len(ALL)
    pages = []
    for offset in range(0, len(ALL), 3):
        rows, more = catalog.search(parse_query("study", [("limit", "3"), ("offset", str(offset))], 1000)[0])
        pages += [r["StudyInstanceUID"] for r in rows]
        assert more == (offset + 3 < len(ALL))
    assert pages == everything
    rows, more = catalog.search(parse_query("study", [], 2)[0])
    assert len(rows) == 2 and more


@pytest.mark.parametrize("params, message", [
    ({"StudyDate": "2024"}, "not a valid DA"),
    ({"StudyDate": "20240101-2024"}, "not a valid DA"),
    ({"StudyTime": "25h"}, "not a valid TM"),
    ({"StudyDate": "-"}, "at least one bound"),
    ({"StudyInstanceUID": "1.2.abc"}, "not a valid UID"),
    ({"SeriesNumber": "x"}, "must be an integer"),
])
def test_malformed_values(searchable, params, message):
    level = "series" if "SeriesNumber" in params else "study"
    with pytest.raises(QueryError, match=message):
        found(searchable, params, level)


def test_patient_level(searchable):
    catalog, _ = searchable
    query, _ = parse_query("patient", [("PatientName", "doe*")], 1000)
    rows, _ = catalog.search(query)
    assert sorted(r["PatientID"] for r in rows) == ["PAT-1", "PAT-2", "PAT-3"]
    [jane] = [r for r in rows if r["PatientID"] == "PAT-1"]
    assert (jane["NumberOfPatientRelatedStudies"], jane["NumberOfPatientRelatedSeries"],
            jane["NumberOfPatientRelatedInstances"]) == (1, 2, 2)
    with pytest.raises(QueryError, match="study level"):
        parse_query("patient", [("StudyDate", "20240101")], 1000)


def test_fuzzy_query_words_split_like_the_index(searchable):
    """Hyphens and commas separate words in queries as in the indexed names."""
    assert found(searchable, {"PatientName": "doe-jan", "fuzzymatching": "true"}) == ["jane"]
    assert found(searchable, {"PatientName": "doe, jo?n", "fuzzymatching": "true"}) == ["john"]
