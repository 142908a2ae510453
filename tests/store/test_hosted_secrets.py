"""Hosted mode asked for in a secrets file Streamlit loads (its default places or
--secrets.files) is on; a secrets file that cannot be read keeps the dashboard read-only."""
from __future__ import annotations

import pytest
from streamlit import config
from streamlit.runtime.secrets import Secrets

from store.hosted import hosted_mode_enabled, hosted_secrets


@pytest.fixture
def secrets_files():
    """Point Streamlit's `secrets.files` at given paths, as `--secrets.files` does."""
    saved = config.get_option("secrets.files")

    def use(*paths):
        config.set_option("secrets.files", [str(p) for p in paths])
        return Secrets(), config.get_option("secrets.files")

    yield use
    config.set_option("secrets.files", saved)


def test_hosted_true_in_a_secrets_file_given_by_secrets_files_turns_hosted_on(tmp_path, secrets_files):
    path = tmp_path / "deploy" / "prod-secrets.toml"
    path.parent.mkdir()
    path.write_text("[shapebench]\nhosted = true\n")
    assert hosted_mode_enabled({}, hosted_secrets(*secrets_files(tmp_path / "absent.toml", path)))


def test_no_secrets_file_leaves_hosted_mode_off(tmp_path, secrets_files):
    assert hosted_secrets(*secrets_files(tmp_path / "absent.toml")) is None
    assert not hosted_mode_enabled({}, None)


def test_a_secrets_file_that_cannot_be_read_stays_read_only(tmp_path, secrets_files):
    path = tmp_path / "secrets.toml"
    path.write_text("[shapebench\nhosted = = true\n")
    assert hosted_mode_enabled({}, hosted_secrets(*secrets_files(path)))


def test_hosted_false_in_a_readable_file_is_off(tmp_path, secrets_files):
    path = tmp_path / "secrets.toml"
    path.write_text('[shapebench]\nhosted = false\nother = "x"\n')
    assert not hosted_mode_enabled({}, hosted_secrets(*secrets_files(path)))
