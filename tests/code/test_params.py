"""params.yaml is the only place values live: the typed object holds no defaults of its own."""

import copy

import pytest
import yaml

from tasks.core.config import ParamsError, load_params
from tests.conftest import REPO

RAW = yaml.safe_load((REPO / "params.yaml").read_text())


def key_paths(d: dict, above: tuple = ()) -> list[tuple]:
    """Every key of the nested mappings, as its path from the top."""
    out = []
    for k, v in d.items():
        out.append((*above, k))
        if isinstance(v, dict):
            out += key_paths(v, (*above, k))
    return out


def test_the_typed_params_hold_exactly_the_keys_of_params_yaml():
    """Nothing the file leaves out is filled in, and nothing in it is ignored."""
    typed = load_params(REPO / "params.yaml").model_dump(by_alias=True)
    assert set(key_paths(typed)) == set(key_paths(RAW))


@pytest.mark.parametrize("path", key_paths(RAW), ids=".".join)
def test_a_deleted_key_fails_at_load_naming_it(path, tmp_path):
    raw = copy.deepcopy(RAW)
    section = raw
    for k in path[:-1]:
        section = section[k]
    del section[path[-1]]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as err:
        load_params(tmp_path / "params.yaml")
    assert ".".join(path) in str(err.value)
