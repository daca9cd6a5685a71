"""One contract, run against every blob store: disk, S3 in-process (moto), S3 over HTTP (moto server)."""
import io
import os
import time

import boto3
import pytest
from moto import mock_aws

from storage.blobs import DiskStore, iter_chunks
from storage.s3 import S3Store


@pytest.fixture(params=["disk", "s3-inprocess", "s3-http"])
def store(request, tmp_path, aws_env):
    if request.param == "disk":
        yield DiskStore(tmp_path / "blobs")
    elif request.param == "s3-inprocess":
        with mock_aws():
            boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="archive")
            yield S3Store.from_url("s3://archive/prefix/x")
    else:
        endpoint = request.getfixturevalue("moto_server")
        bucket = f"b{time.time_ns()}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield S3Store.from_url(f"s3://{bucket}", endpoint_url=endpoint)


def test_put_open_read(store):
    data = os.urandom(3 * (1 << 20) + 17)
    assert store.put("aa/bb/1.2/3.4/5.6.dcm", io.BytesIO(data)) == len(data)
    reader = store.open("aa/bb/1.2/3.4/5.6.dcm")
    assert reader.size == len(data)
    assert b"".join(iter_chunks(reader, 1 << 20)) == data


def test_ranged_reads(store):
    data = bytes(range(256)) * 40
    store.put("k/range.dcm", io.BytesIO(data))
    for start, length in [(0, 10), (100, 1000), (len(data) - 5, 5), (len(data) - 5, 50), (3, None)]:
        reader = store.open("k/range.dcm", start, length)
        got = reader.read()
        reader.close()
        expected = data[start:] if length is None else data[start:start + length]
        assert got == expected and reader.size == len(expected)


def test_missing_key_is_file_not_found(store):
    with pytest.raises(FileNotFoundError):
        store.open("no/such/key.dcm")
    assert not store.exists("no/such/key.dcm")
    store.delete("no/such/key.dcm")  # not an error


def test_overwrite_exists_delete_list(store):
    store.put("p/one.dcm", io.BytesIO(b"first"))
    store.put("p/one.dcm", io.BytesIO(b"second"))
    store.put("q/two.dcm", io.BytesIO(b"2"))
    assert store.open("p/one.dcm").read() == b"second"
    assert store.exists("q/two.dcm")
    listed = dict(store.list())
    assert set(listed) == {"p/one.dcm", "q/two.dcm"}
    assert all(abs(mtime - time.time()) < 300 for mtime in listed.values())
    assert [k for k, _ in store.list("p/")] == ["p/one.dcm"]
    store.delete("p/one.dcm")
    assert not store.exists("p/one.dcm")


@pytest.mark.parametrize("key", ["", "../x", "a/../../x", "/abs", "a//b", "a/./b"])
def test_unsafe_keys_are_refused(store, key):
    with pytest.raises(ValueError):
        store.put(key, io.BytesIO(b"x"))


def test_disk_put_is_atomic_on_failure(tmp_path):
    store = DiskStore(tmp_path)

    class Broken(io.BytesIO):
        def read(self, n=-1):
            raise OSError("connection reset")

    with pytest.raises(OSError):
        store.put("a/b.dcm", Broken())
    assert not store.exists("a/b.dcm")
    assert list(store.list()) == []
    assert [p.name for p in (tmp_path / "a").iterdir()] == []


def test_disk_stale_temporaries_are_removed(tmp_path):
    store = DiskStore(tmp_path)
    (tmp_path / "a").mkdir()
    stale = tmp_path / "a" / ".tmp-crashed"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    (tmp_path / "a" / ".tmp-fresh").write_bytes(b"in progress")
    assert list(store.list()) == []
    assert store.remove_stale_temporaries(3600) == 1
    assert not stale.exists() and (tmp_path / "a" / ".tmp-fresh").exists()


def test_s3_large_upload_uses_multipart(aws_env):
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="big")
        store = S3Store("big")
        data = os.urandom(40 << 20)
        store.put("big.dcm", io.BytesIO(data))
        etag = client.head_object(Bucket="big", Key="big.dcm")["ETag"]
        assert "-" in etag  # multipart uploads have composite ETags
        assert b"".join(iter_chunks(store.open("big.dcm"))) == data


@pytest.mark.parametrize("fsync", [True, False])
def test_a_staged_file_is_moved_into_place_and_one_never_put_is_deleted(tmp_path, fsync):
    store = DiskStore(tmp_path, fsync=fsync)
    staged = store.staged()
    staged.write(b"received instance")
    staged.seek(0)
    assert staged.read(8) == b"received"   # read back as a spool is (the header, the digest)
    staged.seek(0)
    assert store.put("s/t/u.dcm", staged) == len(b"received instance")
    staged.close()
    store.sync(["s/t/u.dcm"])
    assert store.open("s/t/u.dcm").read() == b"received instance"
    assert not os.path.exists(staged.path) and list(store.list()) == [(
        "s/t/u.dcm", (tmp_path / "s/t/u.dcm").stat().st_mtime)]
    refused = store.staged()
    refused.write(b"a part that failed")
    refused.close()
    assert not os.path.exists(refused.path)
    other = DiskStore(tmp_path / "other")
    elsewhere = other.staged()     # another store's file is copied, not moved
    elsewhere.write(b"x")
    elsewhere.seek(0)
    store.put("s/t/v.dcm", elsewhere)
    elsewhere.close()
    assert store.open("s/t/v.dcm").read() == b"x" and not os.path.exists(elsewhere.path)
