"""Two app nodes (separate gunicorn processes and ports) sharing one PostgreSQL catalog and one
S3 bucket (moto over HTTP): what one stores the other serves, and concurrent STOW of
overlapping studies through both leaves a consistent catalog with nothing lost."""
from __future__ import annotations

import threading
import time

import pytest
import requests
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from tests.conftest import API_KEY, free_port
from testbed.messages import multipart_body, read, split_multipart, stow_headers
from testbed.server import Server

AUTH = {"Authorization": f"Bearer {API_KEY}"}


AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, moto_server):
    import boto3

    from tests.conftest import postgres_schema

    work = tmp_path_factory.mktemp("nodes")
    bucket = f"scale{time.time_ns()}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    with postgres_schema("scale") as catalog:
        env = {"DICOMWEB_API_KEY": API_KEY, "DICOMWEB_STORAGE": f"s3://{bucket}/archive",
               "DICOMWEB_S3_ENDPOINT_URL": moto_server, "DICOMWEB_CATALOG_URL": catalog, **AWS}
        started = [Server({**env, "DICOMWEB_DATA_DIR": str(work / name)}, free_port(), work / f"{name}.log")
                   for name in ("a", "b")]
        yield started
        for node in started:
            node.stop()


def test_stored_through_one_served_by_the_other(nodes):
    a, b = nodes
    study = generate_uid()
    datas = [ct_instance(study, generate_uid(), number=n, rows=16, columns=16) for n in (1, 2)]
    assert requests.post(a.dicomweb + "/studies", data=multipart_body(datas),
                         headers={**AUTH, **stow_headers()}).status_code == 200
    [found] = requests.get(b.dicomweb + "/studies", params={"StudyInstanceUID": study}, headers=AUTH).json()
    assert found["00201208"]["Value"] == [2]
    assert found["00081190"]["Value"][0].startswith(b.dicomweb)   # each node names itself
    r = requests.get(f"{b.dicomweb}/studies/{study}", headers={
        **AUTH, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert sorted(body for _, body in split_multipart(r.content, r.headers["Content-Type"])) == sorted(datas)


def test_concurrent_overlapping_stores_through_both_nodes(nodes):
    """Four clients, two per node, store the instances of the same three studies (each
    instance twice, through different nodes, and new series with new modalities)."""
    study_uids = [generate_uid() for _ in range(3)]
    plan = []
    for s, study in enumerate(study_uids):
        for m, modality in enumerate(("CT", "MR", "PT")):
            series = generate_uid()
            plan += [ct_instance(study, series, number=n, rows=8, columns=8, Modality=modality,
                                 seed=s * 100 + m * 10 + n) for n in range(6)]
    errors = []

    def client(node, datas):
        for start in range(0, len(datas), 5):
            r = requests.post(node.dicomweb + "/studies", data=multipart_body(datas[start:start + 5]),
                              headers={**AUTH, **stow_headers()})
            if r.status_code != 200:
                errors.append((r.status_code, r.text[:300]))

    shuffled = plan[::-1]
    threads = [threading.Thread(target=client, args=(node, datas))
               for node, datas in ((nodes[0], plan), (nodes[1], shuffled), (nodes[0], shuffled), (nodes[1], plan))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for node in nodes:
        for study in study_uids:
            [row] = requests.get(node.dicomweb + "/studies", params={"StudyInstanceUID": study}, headers=AUTH).json()
            assert row["00201208"]["Value"] == [18] and row["00201206"]["Value"] == [3]
            assert row["00080061"]["Value"] == ["CT", "MR", "PT"]
            r = requests.get(f"{node.dicomweb}/studies/{study}", headers={
                **AUTH, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
            bodies = [body for _, body in split_multipart(r.content, r.headers["Content-Type"])]
            expected = [d for d in plan if read(d).StudyInstanceUID == study]
            assert sorted(bodies) == sorted(expected)   # nothing lost, nothing twice
