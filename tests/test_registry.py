import pytest

from enas.registry import Registry, RegistryError


def test_register_and_get():
    r = Registry("widget")
    r.register("a")(1)
    assert r.get("a") == 1 and "a" in r and r.names() == ["a"]


def test_duplicate_is_loud():
    r = Registry("widget")
    r.register("a")(1)
    with pytest.raises(RegistryError, match="registered twice"):
        r.register("a")(2)


def test_unknown_suggests_close_name():
    r = Registry("op")
    r.register("sep_conv_3x3")(1)
    with pytest.raises(RegistryError, match="unknown op 'sep_conv3x3'; did you mean 'sep_conv_3x3'"):
        r.get("sep_conv3x3")


def test_space_registry_lists_spaces():
    import search_spaces  # noqa: F401
    from enas.nas.space import SPACES

    assert "enas_rnn" in SPACES
