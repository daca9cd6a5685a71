
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
    assert config.peers_file == peers and [p.name for p in read_peers(config.peers_file).peers] == ["hospital-a", "ncp"]
    assert Config.from_env({"DICOMWEB_DATA_DIR": str(tmp_path)}).peers_file == tmp_path / "peers"   # the default
    peers.write_text("just-a-name\n")
    found = read_peers(peers)
    assert found.peers == () and "peers:1" in found.problems[0]


@pytest.mark.parametrize("line, name, permissions", [
    (f"a {'ab' * 32}", "a", {"read", "store"}),
    (f"a {'AB' * 32}  -", "a", {"read", "store"}),          # sha256sum output pasted whole
    (f"a {'ab' * 32} read", "a", {"read"}),
    (f"a {'ab' * 32}  - read,store,replace", "a", {"read", "store", "replace"}),
])
def test_peers_file_lines_read_leniently_where_plain(line, name, permissions):
    from service.config import parse_peers

    [peer] = parse_peers(line + "\n").peers
    assert peer.name == name and peer.permissions == permissions and peer.key_sha256 == bytes.fromhex("ab" * 32)


@pytest.mark.parametrize("line", [f"a {'ab' * 31}", f"a {'ab' * 32} write", "a", f"a b {'ab' * 32}",
                                  f"a/../b {'ab' * 32}", f"a {'ab' * 32} read extra"])
def test_peers_file_lines_that_cannot_be_read_are_skipped_alone(line):
    from service.config import parse_peers

    found = parse_peers(f"{line}\nok {'cd' * 32}\n", "peers")
    assert [p.name for p in found.peers] == ["ok"] and found.problems[0].startswith("peers:1: ")


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
