"""Fill a catalog directly (not through STOW) with a large, realistic archive for search benchmarks.

    python -m bench.catalog_fill --catalog sqlite:///var/bench-catalog.sqlite --studies 100000

Patients have 1–5 studies; studies 1–6 series of one modality each (CT, MR, CR,
DX, US, PT, NM, MG, SR, with hospital-like frequencies); series a few to a few
dozen instances, about 10 per study on average. Names, dates and accession
numbers vary as a hospital's would. The rows are what STOW would have written,
blobs excepted (their keys point nowhere): enough for QIDO-RS, not for WADO.
"""
from __future__ import annotations

import argparse
import random
import time

from storage.catalog import Catalog
from storage.schema import (
    STUDY_PATIENT_NAME, instances, patients, person_name_columns, person_name_tokens, person_name_tokens_of,
    series, studies,
)

FAMILY = ["SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS", "RODRIGUEZ", "MARTINEZ",
          "HERNANDEZ", "LOPEZ", "GONZALEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE", "JACKSON", "MARTIN",
          "LEE", "PEREZ", "THOMPSON", "WHITE", "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ", "LEWIS", "ROBINSON",
          "MULLER", "SCHMIDT", "SCHNEIDER", "FISCHER", "WEBER", "MEYER", "WAGNER", "BECKER", "SCHULZ", "HOFFMANN",
          "ROSSI", "RUSSO", "FERRARI", "ESPOSITO", "BIANCHI", "ROMANO", "COLOMBO", "RICCI", "MARINO", "GRECO",
          "DUBOIS", "DURAND", "LEROY", "MOREAU", "SIMON", "LAURENT", "LEFEBVRE", "MICHEL", "DAVID", "BERTRAND",
          "NOWAK", "KOWALSKI", "WISNIEWSKI", "WOJCIK", "KOWALCZYK", "KAMINSKI", "LEWANDOWSKI", "ZIELINSKI",
          "JANSEN", "DEVRIES", "VANDIJK", "BAKKER", "VISSER", "SMIT", "MEIJER", "DEBOER", "MULDER", "DEGROOT"]
GIVEN = ["JAMES", "MARY", "JOHN", "PATRICIA", "ROBERT", "JENNIFER", "MICHAEL", "LINDA", "WILLIAM", "ELIZABETH",
         "DAVID", "BARBARA", "RICHARD", "SUSAN", "JOSEPH", "JESSICA", "THOMAS", "SARAH", "CHARLES", "KAREN",
         "MARIA", "ANNA", "HANS", "PETRA", "MARCO", "GIULIA", "PIERRE", "CLAIRE", "JAN", "EVA", "PIOTR", "AGNIESZKA",
         "LUCAS", "EMMA", "NOAH", "SOPHIE", "LIAM", "OLIVIA", "ELENA", "PAULO"]
MODALITIES = [("CT", 25), ("MR", 18), ("CR", 16), ("DX", 12), ("US", 10), ("PT", 4), ("NM", 3), ("MG", 7), ("SR", 5)]
INSTANCES_PER_SERIES = {"CT": (20, 60), "MR": (10, 40), "PT": (10, 40), "NM": (1, 4), "CR": (1, 2), "DX": (1, 2),
                        "US": (1, 8), "MG": (2, 4), "SR": (1, 1)}
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "2.25.4242"


def fill(catalog: Catalog, n_studies: int, seed: int = 1, batch: int = 2000, verbose: bool = True) -> dict:
    """Insert ``n_studies`` studies with their patients, series and instances; return counts."""
    rng = random.Random(seed)
    modalities, weights = zip(*MODALITIES)
    counts = {"patients": 0, "studies": 0, "series": 0, "instances": 0}
    rows: dict[str, list[dict]] = {"patients": [], "studies": [], "series": [], "instances": [], "tokens": []}
    started = time.time()
    with catalog.engine.connect() as conn:
        next_pk = {t: (conn.exec_driver_sql(f"SELECT COALESCE(MAX(pk), 0) FROM {t}").scalar() or 0) + 1
                   for t in ("patients", "studies", "series", "instances")}
    study_n = 0

    def flush() -> None:
        with catalog.engine.connect().execution_options(writer=True) as conn, conn.begin():
            for table, key in ((patients, "patients"), (studies, "studies"), (series, "series"),
                               (instances, "instances"), (person_name_tokens, "tokens")):
                if rows[key]:
                    conn.execute(table.insert(), rows[key])
                    rows[key].clear()

    while study_n < n_studies:
        patient_pk = next_pk["patients"]
        next_pk["patients"] += 1
        name = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}" + (f"^{rng.choice(GIVEN)}" if rng.random() < 0.2 else "")
        rows["patients"].append({
            "pk": patient_pk, "patient_key": f"\x1fP{patient_pk:08d}", "PatientID": f"P{patient_pk:08d}",
            "IssuerOfPatientID": None, "PatientName": name, **person_name_columns("PatientName", name),
            "PatientBirthDate": f"{rng.randint(1925, 2020)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
            "PatientSex": rng.choice("MF")})
        rows["tokens"] += [{"keyword": "PatientName", "token": t, "owner_pk": patient_pk}
                           for t in person_name_tokens_of(name)]
        counts["patients"] += 1
        for _ in range(min(rng.choice([1, 1, 1, 2, 2, 3, 4, 5]), n_studies - study_n)):
            study_n += 1
            study_pk = next_pk["studies"]
            next_pk["studies"] += 1
            referring = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
            study_uid = f"{ROOT}.1.{seed}.{study_pk}"
            rows["studies"].append({
                "pk": study_pk, "StudyInstanceUID": study_uid, "patient_pk": patient_pk,
                "StudyDate": f"{rng.randint(2015, 2025)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                "StudyTime": f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}",
                "AccessionNumber": f"A{study_pk:09d}", "ReferringPhysicianName": referring,
                "patient_name_upper": person_name_columns("PatientName", name)["PatientName_upper"],
                **person_name_columns("ReferringPhysicianName", referring),
                "StudyDescription": rng.choice(["CHEST", "ABDOMEN", "HEAD", "SPINE", "KNEE", "PELVIS", "THORAX"]),
                "StudyID": str(rng.randint(1, 9999)), "created_at": started})
            rows["tokens"] += [{"keyword": "ReferringPhysicianName", "token": t, "owner_pk": study_pk}
                               for t in person_name_tokens_of(referring)]
            rows["tokens"] += [{"keyword": STUDY_PATIENT_NAME, "token": t, "owner_pk": study_pk}
                               for t in person_name_tokens_of(name)]
            counts["studies"] += 1
            study_row = rows["studies"][-1]
            study_modalities: set[str] = set()
            study_row["NumberOfStudyRelatedInstances"] = 0
            for series_number in range(1, rng.choice([1, 1, 2, 2, 3, 3, 4, 6]) + 1):
                series_pk = next_pk["series"]
                next_pk["series"] += 1
                modality = rng.choices(modalities, weights)[0]
                rows["series"].append({
                    "pk": series_pk, "SeriesInstanceUID": f"{study_uid}.{series_number}", "study_pk": study_pk,
                    "Modality": modality, "SeriesNumber": series_number, "SeriesDescription": f"{modality} {series_number}",
                    "BodyPartExamined": None, "PerformedProcedureStepStartDate": None,
                    "PerformedProcedureStepStartTime": None})
                counts["series"] += 1
                low, high = INSTANCES_PER_SERIES[modality]
                n_instances = rng.randint(low, high) // 5 + 1
                rows["series"][-1]["NumberOfSeriesRelatedInstances"] = n_instances
                study_row["NumberOfStudyRelatedInstances"] += n_instances
                study_row["NumberOfStudyRelatedSeries"] = series_number
                study_modalities.add(modality)
                study_row["ModalitiesInStudy"] = "\\".join(sorted(study_modalities))
                for number in range(1, n_instances + 1):
                    instance_pk = next_pk["instances"]
                    next_pk["instances"] += 1
                    sop_uid = f"{study_uid}.{series_number}.{number}"
                    rows["instances"].append({
                        "pk": instance_pk, "SOPInstanceUID": sop_uid, "series_pk": series_pk,
                        "SOPClassUID": CT_IMAGE_STORAGE, "TransferSyntaxUID": "1.2.840.10008.1.2.1",
                        "InstanceNumber": number, "NumberOfFrames": None, "Rows": 512, "Columns": 512,
                        "BitsAllocated": 16, "size": 525338, "sha256": "0" * 64,
                        "blob_key": f"bench/{sop_uid}.dcm", "stored_at": started})
                    counts["instances"] += 1
        if len(rows["instances"]) >= batch * 10:
            flush()
            if verbose:
                print(f"{counts['studies']} studies, {counts['instances']} instances, "
                      f"{time.time() - started:.0f} s", flush=True)
    flush()
    counts["seconds"] = round(time.time() - started, 1)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", required=True, help="catalog URL (sqlite:///… or postgresql://…)")
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    catalog = Catalog(args.catalog, durable=False)
    catalog.create_schema()
    print(fill(catalog, args.studies, args.seed))


if __name__ == "__main__":
    main()
