"""Reading dl.cfg: the shapes users already have are accepted, mistakes are refused by name.

Cheap: load_settings and read_config in-process, no job run. The job runs with these
configurations are in test_failures.py.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

import etl

# Recognisable, never real; unique so that a leak cannot come from anywhere else.
KEY_ID = "AKIATESTCONFIG000001"
# Fixed, so that parallel test workers collect the same parametrized ids; long and odd
# enough never to appear in any output by chance.
SECRET = f"cfg-secret-{hashlib.sha256(b'test_config secret').hexdigest()[:32]}"
TOKEN = f"cfg-token-{hashlib.sha256(b'test_config token').hexdigest()[:32]}"
MINIMAL = f"[AWS]\nAWS_ACCESS_KEY_ID = {KEY_ID}\nAWS_SECRET_ACCESS_KEY = {SECRET}\n"
PATHS = "[PATHS]\nINPUT_DATA = in\nOUTPUT_DATA = out\n"


def settings_from(tmp_path: Path, text: str, *flags: str) -> etl.Settings:
    config = tmp_path / "dl.cfg"
    config.write_text(text, encoding="utf-8")
    return etl.load_settings(etl.parse_args(["--config", str(config), *flags]))


def refusal(tmp_path: Path, text: str, *flags: str) -> str:
    with pytest.raises(etl.UserError) as raised:
        settings_from(tmp_path, text, *flags)
    message = str(raised.value)
    assert "\n" not in message
    for secret in (SECRET, TOKEN, KEY_ID):
        assert secret not in message
    return message


# --- the minimal dl.cfg: [AWS] with two keys, paths on the command line ------------------


def test_aws_keys_without_a_session_token_line(tmp_path):
    settings = settings_from(tmp_path, MINIMAL + PATHS)
    assert settings.aws == {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": ""}


def test_aws_section_alone_with_both_paths_as_flags(tmp_path):
    settings = settings_from(tmp_path, MINIMAL, "--input", "/data/in", "--output", "s3a://bucket/lake")
    assert (settings.input_uri, settings.output_uri) == ("/data/in", "s3a://bucket/lake")
    assert settings.spark == {} and settings.s3_endpoint == "" and not settings.s3_path_style
    assert settings.secrets == [KEY_ID, SECRET]


@pytest.mark.parametrize(
    ("flags", "missing"),
    [((), ("INPUT_DATA and OUTPUT_DATA", "--input and --output")), (("--input", "/in"), ("OUTPUT_DATA", "--output"))],
)
def test_no_paths_section_and_a_path_not_given_by_flag(tmp_path, flags, missing):
    message = refusal(tmp_path, MINIMAL, *flags)
    assert "has no [PATHS] section" in message
    for words in missing:
        assert words in message


def test_no_aws_section_uses_the_default_chain(tmp_path):
    settings = settings_from(tmp_path, PATHS)
    assert settings.aws == dict.fromkeys(etl.AWS_KEYS, "")
    assert settings.secrets == []


def test_empty_config_with_both_flags(tmp_path):
    settings = settings_from(tmp_path, "; nothing but a comment\n", "--input", "/in", "--output", "/out")
    assert settings.aws == dict.fromkeys(etl.AWS_KEYS, "")


def test_the_shipped_dl_cfg_still_reads():
    settings = etl.load_settings(etl.parse_args(["--config", str(etl.default_config_path())]))
    assert settings.input_uri.endswith("sample_data") and settings.aws == dict.fromkeys(etl.AWS_KEYS, "")
    assert settings.spark == {"spark.sql.sources.partitionOverwriteMode": "static"}


def test_the_readme_examples_read_as_documented(tmp_path):
    section = (etl_dir() / "README.md").read_text().split("## Configuration")[1].split("\n## ")[0]
    minimal, full = [block.split("```")[0] for block in section.split("```ini\n")[1:3]]
    settings = settings_from(tmp_path, minimal, "--input", "s3a://udacity-dend", "--output", "s3a://b/sparkify")
    assert (settings.aws["AWS_ACCESS_KEY_ID"], settings.aws["AWS_SECRET_ACCESS_KEY"]) == ("AKIA...", "...")
    settings = settings_from(tmp_path, full)
    assert settings.aws == dict.fromkeys(etl.AWS_KEYS, "")  # comments on their own lines: no value picks one up
    assert settings.input_uri == str(tmp_path / "sample_data")
    assert (settings.s3_endpoint, settings.s3_path_style) == ("http://127.0.0.1:9000", True)


def etl_dir() -> Path:
    return Path(etl.__file__).resolve().parent


# --- quotes --------------------------------------------------------------------------------


def test_one_pair_of_matching_quotes_is_stripped_in_every_section(tmp_path):
    text = (
        f"[AWS]\nAWS_ACCESS_KEY_ID = '{KEY_ID}'\nAWS_SECRET_ACCESS_KEY = \"{SECRET}\"\nAWS_SESSION_TOKEN = ''\n"
        "[PATHS]\nINPUT_DATA = 's3a://bucket/in'\nOUTPUT_DATA = \"/tmp/out\"\n"
        "[SPARK]\nspark.driver.extraJavaOptions = \"-Da=1 -Db='2'\"\nspark.app.name = 'it''s'\n"
        "[S3]\nENDPOINT = 'http://127.0.0.1:9000'\nPATH_STYLE_ACCESS = \"true\"\n"
    )
    settings = settings_from(tmp_path, text)
    assert settings.aws == {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": ""}
    assert (settings.input_uri, settings.output_uri) == ("s3a://bucket/in", "/tmp/out")
    assert settings.spark == {"spark.driver.extraJavaOptions": "-Da=1 -Db='2'", "spark.app.name": "it''s"}
    assert (settings.s3_endpoint, settings.s3_path_style) == ("http://127.0.0.1:9000", True)
    assert settings.secrets == [KEY_ID, SECRET]  # what the Redactor masks: the values the job uses


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("'abc'", "abc"),
        ('"abc"', "abc"),
        ("  'abc'  ", "abc"),
        ("''", ""),
        ("'abc\"", "'abc\""),  # not a matching pair: kept
        ("'abc", "'abc"),
        ("'", "'"),
        ("''abc''", "'abc'"),  # one pair only
        ("' abc '", " abc "),  # what is inside the quotes is the value
        ("a'b'c", "a'b'c"),
    ],
)
def test_quote_rule(written, read):
    assert etl.unquoted(written) == read


@pytest.mark.parametrize("value", [f"' {SECRET}'", f"'{SECRET}' ; my key", f"\"'{SECRET}'\"", f"{SECRET}'"])
def test_a_secret_still_holding_spaces_or_quotes_is_warned_about_without_showing_it(tmp_path, caplog, value):
    text = f"[AWS]\nAWS_ACCESS_KEY_ID = {KEY_ID}\nAWS_SECRET_ACCESS_KEY = {value}\n" + PATHS
    with caplog.at_level(logging.WARNING, logger=etl.JOB_NAME):
        settings = settings_from(tmp_path, text)
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "AWS_SECRET_ACCESS_KEY still holds whitespace or quotes" in warning
    assert SECRET not in warning
    assert SECRET in settings.aws["AWS_SECRET_ACCESS_KEY"]


def test_clean_keys_raise_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=etl.JOB_NAME):
        settings_from(tmp_path, f"[AWS]\naws_access_key_id='{KEY_ID}'\naws_secret_access_key=\"{SECRET}\"\n" + PATHS)
    assert caplog.records == []


def test_the_redactor_masks_the_stripped_secret_in_its_quoted_form_too(tmp_path):
    settings = settings_from(
        tmp_path, f"[AWS]\nAWS_ACCESS_KEY_ID = '{KEY_ID}'\nAWS_SECRET_ACCESS_KEY = '{SECRET}'\n" + PATHS
    )
    redactor = etl.Redactor()
    redactor.secrets = settings.secrets
    assert redactor.redact(f"key '{SECRET}' and id {KEY_ID}") == "key '***' and id ***"


def test_stripped_keys_are_what_reaches_the_hadoop_configuration(tmp_path, spark):
    text = (
        f"[AWS]\nAWS_ACCESS_KEY_ID = '{KEY_ID}'\nAWS_SECRET_ACCESS_KEY = \"{SECRET}\"\nAWS_SESSION_TOKEN = '{TOKEN}'\n"
        "[S3]\nENDPOINT = 'http://127.0.0.1:1'\n"
    )
    settings = settings_from(tmp_path, text, "--input", "/in", "--output", "/out")
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    touched = ["fs.s3a.access.key", "fs.s3a.secret.key", "fs.s3a.session.token", "fs.s3a.aws.credentials.provider"]
    touched += ["fs.s3a.endpoint", "fs.s3a.connection.ssl.enabled", "fs.s3.impl", *etl.S3A_DEFAULTS]
    before = {key: hadoop.get(key) for key in touched}
    try:
        etl.configure_storage(spark, settings)
        assert hadoop.get("fs.s3a.access.key") == KEY_ID
        assert hadoop.get("fs.s3a.secret.key") == SECRET
        assert hadoop.get("fs.s3a.session.token") == TOKEN
        assert hadoop.get("fs.s3a.endpoint") == "http://127.0.0.1:1"
    finally:  # the session is shared by the whole test run
        for key, value in before.items():
            if value is None:
                hadoop.unset(key)
            else:
                hadoop.set(key, value)


# --- names: case, unknown sections and keys ------------------------------------------------


def test_section_names_and_non_spark_keys_in_any_case_spark_keys_as_written(tmp_path):
    text = (
        f"[aws]\naws_access_key_id = {KEY_ID}\nAws_Secret_Access_Key = {SECRET}\n"
        "[Paths]\ninput_data = in\noutput_data = out\n"
        "[spark]\nspark.sql.shuffle.partitions = 3\nspark.hadoop.fs.s3a.fastUpload = true\n"
    )
    settings = settings_from(tmp_path, text)
    assert settings.aws["AWS_ACCESS_KEY_ID"] == KEY_ID and settings.aws["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert settings.input_uri == str(tmp_path / "in")
    assert settings.spark == {"spark.sql.shuffle.partitions": "3", "spark.hadoop.fs.s3a.fastUpload": "true"}


def test_unknown_sections_are_ignored_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=etl.JOB_NAME):
        settings = settings_from(tmp_path, MINIMAL + PATHS + "[CLUSTER]\nNODES = 3\n")
    assert settings.aws["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert ["ignoring [CLUSTER]" in record.getMessage() for record in caplog.records] == [True]


def test_default_section_keys_stay_in_their_section(tmp_path, caplog):
    """configparser would copy [DEFAULT]'s keys into every section, [SPARK] included."""
    with caplog.at_level(logging.WARNING, logger=etl.JOB_NAME):
        settings = settings_from(tmp_path, "[DEFAULT]\nOWNER = me\n" + PATHS + "[SPARK]\n")
    assert settings.spark == {}
    assert "ignoring [DEFAULT]" in caplog.text


def test_a_bom_is_not_part_of_the_first_header(tmp_path):
    config = tmp_path / "dl.cfg"
    config.write_text(MINIMAL + PATHS, encoding="utf-8-sig")
    assert etl.read_config(str(config))["AWS"]["AWS_SECRET_ACCESS_KEY"] == SECRET


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        (MINIMAL + "KEY = x\n" + PATHS, ("[AWS] has the unknown key KEY", "AWS_ACCESS_KEY_ID")),
        (MINIMAL + "aws_secret = x\n" + PATHS, ("[AWS] has the unknown key aws_secret",)),
        (MINIMAL + "[S3]\nINPUT_DATA = s3a://udacity-dend\n", ("[S3] has the unknown key INPUT_DATA", "in [PATHS]")),
        (f"[default]\nAWS_ACCESS_KEY_ID = {KEY_ID}\n" + PATHS, ("[default] holds AWS_ACCESS_KEY_ID", "[AWS]")),
        (MINIMAL + PATHS + "[aws]\nAWS_SESSION_TOKEN = x\n", ("both [AWS] and [aws]",)),
        (MINIMAL + f"aws_secret_access_key = {SECRET}\n" + PATHS, ("sets AWS_SECRET_ACCESS_KEY twice",)),
        (MINIMAL + f"AWS_SECRET_ACCESS_KEY = {SECRET}\n" + PATHS, ("sets AWS_SECRET_ACCESS_KEY twice",)),
    ],
)
def test_unknown_or_repeated_names_are_refused(tmp_path, text, phrases):
    message = refusal(tmp_path, text)
    for phrase in phrases:
        assert phrase in message, message


@pytest.mark.parametrize(
    ("text", "ignored"),
    [
        (MINIMAL + "aws_region = us-west-2\n" + PATHS, "ignoring aws_region in [AWS]"),
        (MINIMAL + PATHS + "INPUT = x\n", "ignoring INPUT in [PATHS]"),
        (MINIMAL + PATHS + "[S3]\nENDPOINTS = x\n", "ignoring ENDPOINTS in [S3]"),
    ],
)
def test_keys_the_job_does_not_read_are_ignored_with_a_warning(tmp_path, caplog, text, ignored):
    with caplog.at_level(logging.WARNING, logger=etl.JOB_NAME):
        settings = settings_from(tmp_path, text)
    assert settings.aws["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert [ignored in record.getMessage() for record in caplog.records] == [True]


@pytest.mark.parametrize(
    "line", [f"{SECRET}=", f"{TOKEN}/AbC+dEf==", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY=", "AKIAIOSFODNN7EXAMPLE ="]
)
def test_a_pasted_value_taken_for_a_key_is_not_shown(tmp_path, line):
    message = refusal(tmp_path, MINIMAL + line + "\n" + PATHS)
    assert "unknown key (not shown" in message
    assert line.split("=")[0] not in message


# --- credentials that cannot work -----------------------------------------------------------


@pytest.mark.parametrize(
    ("aws", "phrase"),
    [
        (f"AWS_ACCESS_KEY_ID = {KEY_ID}\n", "sets AWS_ACCESS_KEY_ID but not AWS_SECRET_ACCESS_KEY"),
        (f"AWS_ACCESS_KEY_ID = {KEY_ID}\nAWS_SECRET_ACCESS_KEY = ''\n", "but not AWS_SECRET_ACCESS_KEY"),
        (f"AWS_SECRET_ACCESS_KEY = {SECRET}\n", "sets AWS_SECRET_ACCESS_KEY but not AWS_ACCESS_KEY_ID"),
        (f"AWS_SESSION_TOKEN = {TOKEN}\n", "AWS_SESSION_TOKEN without AWS_ACCESS_KEY_ID"),
    ],
)
def test_half_given_credentials_are_refused(tmp_path, aws, phrase):
    assert phrase in refusal(tmp_path, "[AWS]\n" + aws + PATHS)


# --- a file without section headers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "section"),
    [
        (f"AWS_ACCESS_KEY_ID={KEY_ID}\nAWS_SECRET_ACCESS_KEY={SECRET}\n", "[AWS], the section of AWS_ACCESS_KEY_ID"),
        (f"# my keys\n\naws_secret_access_key: {SECRET}\n", "[AWS], the section of AWS_SECRET_ACCESS_KEY"),
        ("INPUT_DATA = in\nOUTPUT_DATA = out\n", "[PATHS], the section of INPUT_DATA"),
        ("spark.master = local[2]\n", "[SPARK], the section of Spark properties"),
        (f"{SECRET}\n", "its first line must be one, e.g. [AWS] above AWS_ACCESS_KEY_ID"),
    ],
)
def test_no_section_header_says_which_first_line_is_expected(tmp_path, text, section):
    message = refusal(tmp_path, text)
    assert "has no section header: its first line must be" in message
    assert section in message, message
