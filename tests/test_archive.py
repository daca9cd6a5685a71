"""The archive over disk and S3 blobs, with SQLite and PostgreSQL catalogs: ingest, duplicates, crashes, races."""
import hashlib
import io
import os
import threading
import time

import pytest

from testbed.synthetic import ct_instance
from storage import Archive, Catalog, DiskStore
from storage.status import FailureReason
from pydicom.uid import generate_uid


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def blobs(tmp_path):
    return DiskStore(tmp_path / "blobs")


@pytest.fixture
def catalog(catalog_url):
    catalog = Catalog(catalog_url)
    catalog.create_schema()
    return catalog


@pytest.fixture
def archive(blobs, catalog):
    return Archive(blobs, catalog)


def store(archive, data, **kwargs):
    return archive.store(io.BytesIO(data), sha(data), **kwargs)


def instance(study=None, series=None, sop=None, **kwargs):
    return ct_instance(study or generate_uid(), series or generate_uid(), sop or generate_uid(), **kwargs)


def test_store_and_find(archive):
    study, series = generate_uid(), generate_uid()
    datas = [instance(study, series, number=n) for n in (2, 1, 3)]
    for data in datas:
        assert store(archive, data).stored
    found = archive.instances(study)
    assert len(found) == 3 and all(i.transfer_syntax_uid == "1.2.840.10008.1.2.1" for i in found)
    assert [archive.open(i).read() for i in found] == [datas[1], datas[0], datas[2]]  # by InstanceNumber
    assert [i.size for i in found] == [len(datas[1]), len(datas[0]), len(datas[2])]
    assert archive.instances(study, series) == found
    one = archive.instances(study, series, found[0].sop_instance_uid)
    assert one == found[:1]
    assert archive.instances(generate_uid()) == []
    assert archive.instances(study, generate_uid()) == []


def test_retrieve_order_is_series_then_instance_number(archive):
    study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    for series, number, series_number in [(s2, 2, 2), (s1, 3, 1), (s2, 1, 2), (s1, 1, 1)]:
        store(archive, instance(study, series, number=number, series_number=series_number))
    found = archive.instances(study)
    assert [i.series_uid for i in found] == [s1, s1, s2, s2]


def test_identical_duplicate_is_accepted_and_different_content_refused(archive, blobs):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = instance(study, series, sop, seed=1)
    assert store(archive, first).stored
    assert store(archive, first).stored
    other = instance(study, series, sop, seed=2)
    outcome = store(archive, other)
    assert outcome.failure == FailureReason.DUPLICATE_SOP_INSTANCE
    [kept] = archive.instances(study)
    assert archive.open(kept).read() == first
    assert len(list(blobs.list())) == 1


def test_replace_policy(tmp_path, catalog_url):
    catalog = Catalog(catalog_url)
    catalog.create_schema()
    blobs = DiskStore(tmp_path / "b")
    archive = Archive(blobs, catalog, replace_duplicates=True)
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    store(archive, instance(study, series, sop, seed=1))
    newer = instance(study, series, sop, seed=2)
    assert store(archive, newer).stored
    [kept] = archive.instances(study)
    assert archive.open(kept).read() == newer
    assert len(list(blobs.list())) == 2   # the replaced blob is left to the sweep…
    assert archive.sweep(grace_seconds=0) == 1 and len(list(blobs.list())) == 1   # …which removes it


def test_a_concurrent_replacement_never_deletes_the_current_blob(tmp_path, catalog_url):
    """A replaces P with X while B puts P's content back: B's row names P's blob again. Deleting
    A's "previous" blob right after A's commit removed the blob B had just made current."""
    catalog = Catalog(catalog_url)
    catalog.create_schema()
    archive = Archive(DiskStore(tmp_path / "b"), catalog, replace_duplicates=True)
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    original, other = instance(study, series, sop, seed=1), instance(study, series, sop, seed=2)
    store(archive, original)
    register = catalog.register_many

    def a_then_b(items, replace=False):
        registered = register(items, replace)
        catalog.register_many = register
        assert store(archive, original).stored   # B, between A's commit and what A does after it
        return registered

    catalog.register_many = a_then_b
    assert store(archive, other).stored   # A
    [current] = archive.instances(study)
    assert archive.open(current).read() == original
    archive.sweep(grace_seconds=0)
    assert archive.open(current).read() == original   # the sweep too leaves the current blob


def test_the_sweep_leaves_the_blobs_of_a_store_in_progress(tmp_path, catalog_url):
    """Blobs are written as parts arrive and catalogued when the batch commits: however long a
    batch takes, its blobs are not swept (they were, past an hour); a store that died leaves
    marks the sweep forgets after their own grace."""
    catalog = Catalog(catalog_url)
    catalog.create_schema()
    blobs = DiskStore(tmp_path / "b")
    archive = Archive(blobs, catalog)
    datas = [instance(generate_uid(), generate_uid()) for _ in range(3)]
    batch = archive.batch()
    for data in datas:
        batch.add(io.BytesIO(data), hashlib.sha256(data).hexdigest())
    assert archive.sweep(grace_seconds=0) == 0 and len(list(blobs.list())) == 3
    assert all(o.stored for o in batch.commit())
    assert archive.sweep(grace_seconds=0) == 0 and len(list(blobs.list())) == 3
    dead = archive.batch()   # a store that died before its commit
    orphan = instance(generate_uid(), generate_uid())
    dead.add(io.BytesIO(orphan), hashlib.sha256(orphan).hexdigest())
    assert archive.sweep(grace_seconds=0) == 0
    assert archive.sweep(grace_seconds=0, pending_grace=0) == 1 and len(list(blobs.list())) == 3


def test_hierarchy_conflicts_are_refused(archive, blobs):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    store(archive, instance(study, series, sop))
    moved_series = store(archive, instance(generate_uid(), series))
    assert moved_series.failure == FailureReason.DATASET_MISMATCH
    moved_instance = store(archive, instance(study, generate_uid(), sop))
    assert moved_instance.failure == FailureReason.DATASET_MISMATCH
    assert len(list(blobs.list())) == 1


def test_expected_study_mismatch(archive, blobs):
    outcome = store(archive, instance(), expected_study="1.2.3")
    assert outcome.failure == FailureReason.DATASET_MISMATCH and "does not match" in outcome.message
    assert list(blobs.list()) == []


@pytest.mark.parametrize("data, reason", [
    (b"not dicom at all", FailureReason.CANNOT_UNDERSTAND),
    (b"\0" * 128 + b"DICM" + b"\x02\x00", FailureReason.CANNOT_UNDERSTAND),
])
def test_unreadable_input(archive, data, reason):
    assert store(archive, data).failure == reason


def test_catalog_failure_leaves_only_an_orphan_that_the_sweep_removes(archive, monkeypatch, blobs, catalog):
    data = instance()

    def crash(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(catalog, "register_many", crash)
    outcome = store(archive, data)
    assert outcome.failure == FailureReason.PROCESSING_FAILURE
    monkeypatch.undo()
    [(orphan, _)] = list(blobs.list())
    assert archive.instances(outcome.study_uid) == []  # never a row without its blob
    assert archive.sweep(grace_seconds=3600) == 0       # too young: might be a write in progress
    kept = store(archive, instance())
    assert archive.sweep(grace_seconds=0, now=time.time() + 1) == 1
    assert [k for k, _ in blobs.list()] != [orphan]
    assert archive.open(archive.instances(kept.study_uid)[0]).read()


def test_blob_failure_writes_nothing(archive, monkeypatch, blobs):
    def full(key, stream):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(blobs, "put", full)
    outcome = store(archive, instance())
    assert outcome.failure == FailureReason.OUT_OF_RESOURCES
    assert archive.instances(outcome.study_uid) == []


def test_concurrent_writers_of_the_same_instances(archive, blobs):
    """Eight threads store the same study at once: every call succeeds, one row and one blob per instance."""
    study, series = generate_uid(), generate_uid()
    datas = [instance(study, series, number=n) for n in range(5)]
    results, errors = [], []

    def worker():
        try:
            for data in datas:
                results.append(store(archive, data))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r.stored for r in results) and len(results) == 40
    assert len(archive.instances(study)) == 5
    assert len(list(blobs.list())) == 5


def test_concurrent_conflicting_writers_keep_one_consistent_version(archive, blobs):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    versions = [instance(study, series, sop, seed=s) for s in range(6)]
    results = []
    threads = [threading.Thread(target=lambda d=d: results.append(store(archive, d))) for d in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.stored for r in results) == 1
    [row] = archive.instances(study)
    assert archive.open(row).read() in versions
    assert [k for k, _ in blobs.list()] == [row.blob_key]


def test_s3_archive(tmp_path, aws_env, moto_server):
    import boto3
    from storage.s3 import S3Store

    bucket = f"arch{time.time_ns()}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    catalog.create_schema()
    archive = Archive(S3Store(bucket, "dicom", endpoint_url=moto_server), catalog)
    data = instance()
    outcome = store(archive, data)
    assert outcome.stored
    [row] = archive.instances(outcome.study_uid)
    assert archive.open(row).read() == data
    assert row.size == len(data) and os.path.basename(row.blob_key).startswith(outcome.sop_instance_uid)


def test_batch_keeps_order_and_is_invisible_until_commit(archive):
    study, series = generate_uid(), generate_uid()
    batch = archive.batch()
    good = [instance(study, series, number=n) for n in range(3)]
    batch.add(io.BytesIO(good[0]), sha(good[0]))
    batch.add(io.BytesIO(b"junk"), sha(b"junk"))
    batch.add(io.BytesIO(good[1]), sha(good[1]), expected_study="1.2.3")
    batch.add(io.BytesIO(good[2]), sha(good[2]))
    assert len(batch) == 2 and archive.instances(study) == []
    outcomes = batch.commit()
    assert [o.stored for o in outcomes] == [True, False, False, True]
    assert [o.failure for o in outcomes] == [None, FailureReason.CANNOT_UNDERSTAND, FailureReason.DATASET_MISMATCH, None]
    assert len(archive.instances(study)) == 2


def test_disk_sync_fsyncs_each_directory_once(tmp_path, monkeypatch):
    import storage.blobs as blobs

    synced = []
    monkeypatch.setattr(blobs, "_fsync_dir", synced.append)
    store = DiskStore(tmp_path)
    keys = ["aa/bb/1/2/3.dcm", "aa/bb/1/2/4.dcm", "aa/cc/5/6/7.dcm"]
    for key in keys:
        store.put(key, io.BytesIO(b"x"))
    assert synced == []
    store.sync(keys)
    assert sorted(synced) == sorted({store.root, *[(store.root / k).parent for k in keys],
                                     store.root / "aa", store.root / "aa/bb", store.root / "aa/bb/1",
                                     store.root / "aa/cc", store.root / "aa/cc/5"})
    assert len(synced) == len(set(synced))


def test_sweep_command(tmp_path):
    from service import create_app
    from tests.conftest import make_config

    app = create_app(make_config(tmp_path))
    blobs = DiskStore(app.config["DICOMWEB"].storage)   # the store the app's archive is made on
    blobs.put("aa/bb/1.2/3.4/5.6.0123.dcm", io.BytesIO(b"orphan"))
    blobs.sync(["aa/bb/1.2/3.4/5.6.0123.dcm"])   # in place
    old = time.time() - 7200
    os.utime(blobs.root / "aa/bb/1.2/3.4/5.6.0123.dcm", (old, old))
    from click.testing import CliRunner

    from service.cli import main

    config = app.config["DICOMWEB"]
    result = CliRunner().invoke(main, ["sweep"], catch_exceptions=False, env={
        "DICOMWEB_DATA_DIR": str(config.data_dir), "DICOMWEB_CATALOG_URL": config.catalog_url,
        "DICOMWEB_STORAGE": config.storage})
    assert "removed 1 orphaned blob(s)" in result.output
    assert list(blobs.list()) == []


def study_counts(archive, study):
    from service.search.qido_params import parse_query

    [row], _ = archive.search(parse_query("study", [("StudyInstanceUID", study)], 10)[0])
    return row["NumberOfStudyRelatedSeries"], row["NumberOfStudyRelatedInstances"], row["ModalitiesInStudy"]


def test_counts_ignore_repeats_and_survive_concurrent_writers(archive):
    study = generate_uid()
    series_uids = [generate_uid() for _ in range(6)]
    datas = [instance(study, series_uids[n % 6], number=n, Modality=["CT", "MR", "PT"][n % 3]) for n in range(18)]
    store(archive, datas[0])
    store(archive, datas[0])   # identical again: not counted twice
    assert study_counts(archive, study) == (1, 1, ["CT"])
    errors = []

    def worker(offset):
        try:
            for data in datas[offset::3] + datas[::4]:   # overlapping work, in different orders
                store(archive, data)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert study_counts(archive, study) == (6, 18, ["CT", "MR", "PT"])
    from service.search.qido_params import parse_query

    rows, _ = archive.search(parse_query("series", [("StudyInstanceUID", study)], 10)[0])
    assert sorted(r["NumberOfSeriesRelatedInstances"] for r in rows) == [3] * 6


def test_an_outdated_catalog_is_refused_at_start(tmp_path):
    import sqlite3

    from storage.catalog import SchemaOutdated

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:   # the studies table as an earlier version made it
        db.execute('CREATE TABLE studies (pk INTEGER PRIMARY KEY, "StudyInstanceUID" VARCHAR(64), '
                   'patient_pk INTEGER, created_at FLOAT)')
    with pytest.raises(SchemaOutdated, match=r"version 0, this code needs \d+; it lacks .*patients.*dicomweb migrate"):
        Catalog(f"sqlite:///{path}").create_schema()


def test_the_sweep_aborts_multipart_uploads_a_killed_worker_left(tmp_path, aws_env, moto_server):
    import boto3

    from storage.s3 import S3Store

    bucket = "sweep-" + generate_uid()[-8:]
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    catalog.create_schema()
    archive = Archive(S3Store(bucket, "dicom", endpoint_url=moto_server), catalog)
    left = s3.create_multipart_upload(Bucket=bucket, Key="dicom/aa/bb/left-behind.dcm")
    s3.upload_part(Bucket=bucket, Key="dicom/aa/bb/left-behind.dcm", UploadId=left["UploadId"], PartNumber=1,
                   Body=b"x" * (5 << 20))
    other = s3.create_multipart_upload(Bucket=bucket, Key="not-ours/x")   # outside the store's prefix
    # moto dates every upload 2010-11-10: "young" is tried with a grace reaching back beyond that
    assert archive.sweep(grace_seconds=1e10) == 0   # too young: may be a write in progress
    assert archive.sweep(grace_seconds=0, now=time.time() + 1) == 1
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in uploads] == [other["UploadId"]]


def test_disk_puts_are_seen_at_once_and_a_failed_sync_stores_nothing(blobs, catalog, monkeypatch):
    import storage.blobs

    archive = Archive(blobs, catalog)
    data = instance()
    blobs.put("k/1", io.BytesIO(b"abc"))        # made durable and renamed by another thread…
    assert blobs.exists("k/1") and blobs.open("k/1").read() == b"abc"   # …but seen here at once

    failed = threading.Event()

    def failing(tmp, path):
        os.unlink(tmp)
        failed.set()
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(storage.blobs, "_fsync_and_rename", failing)
    batch = archive.batch()
    batch.add(io.BytesIO(data), sha(data))
    assert failed.wait(10)
    time.sleep(0.05)   # the write has failed well before the commit asks: the failure is still told
    [outcome] = batch.commit()
    assert not outcome.stored and outcome.failure == FailureReason.PROCESSING_FAILURE
    assert "durable" in outcome.message
    assert archive.instances(outcome.study_uid) == []


def test_the_transfer_syntax_scanned_from_the_file_meta_is_pydicoms():
    """storage.dataset walks a well-formed file meta group itself for (0002,0010) (for speed);
    over every file pydicom ships, what it finds is what pydicom reads, and it leaves to pydicom
    what it cannot walk."""
    import io
    import warnings

    import pydicom

    from storage.dataset import _META_READ, _scanned_transfer_syntax
    from tests.conftest import pydicom_test_files

    scanned = 0
    for path in pydicom_test_files():
        data = path.read_bytes()
        found = _scanned_transfer_syntax(data[:_META_READ])
        if found is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fp = io.BytesIO(data)
            pydicom.filereader.read_preamble(fp, False)
            meta = pydicom.filereader._read_file_meta_info(fp)
        assert found == str(meta.TransferSyntaxUID), path.name
        scanned += 1
    assert scanned > 100


@pytest.mark.parametrize("cut", range(132, 160))
def test_a_file_meta_cut_anywhere_is_left_to_pydicom(cut):
    """The walk of the file meta group never raises on a file that ends inside it (an element's
    header included): it leaves the file to pydicom's reading, which says None."""
    import io

    from storage.dataset import _scanned_transfer_syntax, transfer_syntax

    head = ct_instance(generate_uid(), generate_uid(), rows=8, columns=8)[:132] + b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"
    assert _scanned_transfer_syntax(head[:cut]) is None
    assert transfer_syntax(io.BytesIO(head[:cut])) is None


def test_the_decoded_prefix_of_an_encapsulated_file_reads_as_its_data_set():
    """storage.dataset.decoded_prefix copies an encapsulated file's data set bytes behind a file
    meta group naming Explicit VR Little Endian: over pydicom's encapsulated files, pydicom reads
    back the same data set and the same meta but for the syntax; where the data set is not
    explicit VR (a file that lies about its encoding) it declines."""
    import io
    import warnings

    import pydicom

    from storage.dataset import _meta_elements, decoded_prefix, read_until_pixels
    from tests.conftest import pydicom_test_files

    checked = declined = 0
    for path in pydicom_test_files():
        data = path.read_bytes()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds, location = read_until_pixels(io.BytesIO(data))
                implicit = ds.is_implicit_VR
        except Exception:
            continue
        if location is None or not location.frames:
            continue
        prefix = data[:location.frames[0][0][0]]
        copied = decoded_prefix(prefix)
        if copied is None:
            declined += 1
            continue
        assert not implicit, path.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            back = pydicom.dcmread(io.BytesIO(copied))
        assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1", path.name
        assert _meta_elements(copied)[1] == 144 + back.file_meta.FileMetaInformationGroupLength, path.name
        assert {e.tag: e.value for e in back.file_meta if e.tag not in (0x00020000, 0x00020010)} == \
            {e.tag: e.value for e in ds.file_meta if e.tag not in (0x00020000, 0x00020010)}, path.name
        assert list(back) == list(ds), path.name
        for cut in range(0, len(prefix), max(1, len(prefix) // 40)):   # any other prefix: declined, no error
            assert decoded_prefix(prefix[:cut]) is None
        checked += 1
    assert checked >= 20 and declined >= 1, (checked, declined)
