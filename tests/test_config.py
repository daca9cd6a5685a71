
import pytest

from service.config import Config, hash_key, read_peers


def test_defaults_under_data_dir(tmp_path):
    config = Config.from_env({"DICOMWEB_DATA_DIR": str(tmp_path)})
    assert config.storage == str(tmp_path / "blobs")
    assert config.catalog_url == f"sqlite:///{tmp_path.resolve() / 'catalog.sqlite'}"
    assert config.url_prefix == "/dicom-web" and config.auth_enabled and config.fsync
    assert config.peers == ()


def test_key_from_environment_or_data_dir(tmp_path):
    config = Config.from_env({"DICOMWEB_DATA_DIR": str(tmp_path), "DICOMWEB_API_KEY": "k1"})
    assert [(p.name, p.key_sha256) for p in config.peers] == [("default", hash_key("k1"))]
    (tmp_path / "api-key").write_text("k2\n")
    config = Config.from_env({"DICOMWEB_DATA_DIR": str(tmp_path)})
    assert config.peers[0].key_sha256 == hash_key("k2")


def test_peers_file(tmp_path):
    peers = tmp_path / "peers"
    peers.write_text(f"# name and sha256 of the key\nhospital-a {hash_key('a').hex()}\n\nncp {hash_key('b').hex()}  # EU\n")
    config = Config.from_env({"DICOMWEB_DATA_DIR": str(tmp_path), "DICOMWEB_PEERS_FILE": str(peers)})
    assert config.peers_file == peers and [p.name for p in read_peers(config.peers_file)] == ["hospital-a", "ncp"]
    assert Config.from_env({"DICOMWEB_DATA_DIR": str(tmp_path)}).peers_file == tmp_path / "peers"   # the default
    peers.write_text("just-a-name\n")
    with pytest.raises(ValueError, match="peers:1"):
        read_peers(peers)


def test_all_settings(tmp_path):
    config = Config.from_env({
        "DICOMWEB_DATA_DIR": str(tmp_path), "DICOMWEB_STORAGE": "s3://bucket/prefix",
        "DICOMWEB_S3_ENDPOINT_URL": "http://127.0.0.1:9000", "DICOMWEB_CATALOG_URL": "postgresql://db/x",
        "DICOMWEB_AUTH": "off", "DICOMWEB_PREFIX": "dw/", "DICOMWEB_PUBLIC_URL": "https://x/dw",
        "DICOMWEB_TRUSTED_PROXIES": "1", "DICOMWEB_MAX_REQUEST_BYTES": "1000", "DICOMWEB_ON_DUPLICATE": "replace",
        "DICOMWEB_FSYNC": "off",
    })
    assert (config.storage, config.s3_endpoint_url, config.catalog_url) == (
        "s3://bucket/prefix", "http://127.0.0.1:9000", "postgresql://db/x")
    assert not config.auth_enabled and config.url_prefix == "/dw" and config.public_base_url == "https://x/dw"
    assert config.trusted_proxies == 1 and config.max_request_bytes == 1000
    assert config.replace_duplicates and not config.fsync


def test_bad_flag():
    with pytest.raises(ValueError, match="DICOMWEB_AUTH"):
        Config.from_env({"DICOMWEB_AUTH": "maybe"})
