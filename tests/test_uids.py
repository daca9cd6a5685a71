import pytest

from storage.uids import InvalidUID, blob_key, is_valid_uid, validate_uid

SHA = "ab" * 32


@pytest.mark.parametrize("uid", ["1", "1.2.840.10008.1.2.1", "2.25.123456789012345678901234567890", "1.2.04.5",
                                 "1." + "2" * 62])
def test_valid(uid):
    assert is_valid_uid(uid) and validate_uid(uid) == uid


@pytest.mark.parametrize("uid", ["", "1..2", ".1", "1.", "1.2a", "../etc", "1/2", "1.2 ", "1." + "2" * 63, None, 12,
                                 "١.٢"])
def test_invalid(uid):
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUID):
        validate_uid(uid)


def test_blob_key_is_sharded_and_content_addressed():
    key = blob_key("1.2.3", "1.2.3.4", "1.2.3.4.5", SHA)
    shard_a, shard_b, study, series, name = key.split("/")
    assert (study, series) == ("1.2.3", "1.2.3.4") and len(shard_a) == len(shard_b) == 2
    assert name == "1.2.3.4.5." + SHA[:20] + ".dcm"
    assert blob_key("1.2.3", "1.2.3.4", "1.2.3.4.5", "cd" * 32) != key


@pytest.mark.parametrize("args", [("..", "1", "1", SHA), ("1", "1/2", "1", SHA), ("1", "1", "1", "../x")])
def test_blob_key_refuses_unsafe_input(args):
    with pytest.raises((InvalidUID, ValueError)):   # a UID that is none, or a digest that is none
        blob_key(*args)
