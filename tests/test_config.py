import pytest

from lora_studio.config import Settings, parse_auth


def test_defaults_to_tiny():
    settings = Settings.from_env({})
    assert settings.engine == "tiny" and settings.is_tiny and settings.image_size == 64


def test_model_implies_local_and_flags_win():
    settings = Settings.from_env({"LORA_STUDIO_MODEL": "/models/flux", "LORA_STUDIO_PORT": "9000"})
    assert settings.engine == "local" and settings.port == 9000
    assert Settings.from_env({}, model="/m").engine == "local"
    assert Settings.from_env({"LORA_STUDIO_PORT": "9000"}, port=7000).port == 7000


def test_bad_values_are_explained():
    with pytest.raises(ValueError, match="Unknown engine"):
        Settings(engine="gpu")
    # `--engine local` without --model runs FLUX.2 [klein] 4B, open with no token (issue 22)
    from lora_studio.config import LOCAL_DEFAULT
    from lora_studio.engines.family import KLEIN_4B

    assert Settings(engine="local").local_model == LOCAL_DEFAULT == KLEIN_4B
    assert Settings(engine="local", model="/m").local_model == "/m"
    with pytest.raises(ValueError, match="USER:PASS"):
        parse_auth("nopass")
    assert parse_auth("a:b:c") == ("a", "b:c")


def test_replicate_settings_from_env():
    settings = Settings.from_env({"LORA_STUDIO_ENGINE": "replicate", "LORA_STUDIO_REPLICATE_DESTINATION": "me/mila",
                                  "REPLICATE_BASE_URL": "http://127.0.0.1:9"})
    assert settings.engine == "replicate"
    assert settings.replicate.destination == "me/mila" and settings.replicate.base_url == "http://127.0.0.1:9"
    assert settings.replicate.trainer == "ostris/flux-dev-lora-trainer"


def test_replicate_predictions_at_once_from_a_flag_or_the_environment_and_bounded():
    from lora_studio.cli import build_parser, settings_from

    assert Settings.from_env({}).replicate.parallel == 8
    assert Settings.from_env({"LORA_STUDIO_REPLICATE_PARALLEL": "3"}).replicate.parallel == 3
    assert Settings.from_env({"LORA_STUDIO_REPLICATE_PARALLEL": "3"}, replicate_parallel=5).replicate.parallel == 5
    args = build_parser().parse_args(["jobs", "--replicate-parallel", "2"])
    assert settings_from(args).replicate.parallel == 2
    for bad in ("0", "17", "many"):
        with pytest.raises(ValueError, match="LORA_STUDIO_REPLICATE_PARALLEL"):
            Settings.from_env({"LORA_STUDIO_REPLICATE_PARALLEL": bad})


def test_every_yes_no_switch_reads_by_one_rule():
    """LORA_STUDIO_SHARE, the speed switches and SPACES_ZERO_GPU (and launch's LORA_STUDIO_NO_BROWSER) share
    config.truthy: 1, t, true, yes and on, in any case, are on; anything else is off."""
    from lora_studio.config import SpeedRequest, truthy, zero_gpu_requested

    for text in ("1", "t", "TRUE", "yes", " On "):
        assert truthy(text)
        assert Settings.from_env({"LORA_STUDIO_SHARE": text}).share is True
        assert SpeedRequest.from_env({"LORA_STUDIO_COMPILE": text}, {}).compile is True
        assert zero_gpu_requested({"SPACES_ZERO_GPU": text})
    for text in ("0", "false", "no", "off", "", None, "maybe"):
        assert not truthy(text) and not zero_gpu_requested({"SPACES_ZERO_GPU": text} if text is not None else {})


def test_bytes_read_the_same_everywhere():
    from lora_studio.sizes import byte_text, rate_text

    assert byte_text(None) == "?" and byte_text(48_000_000) == "48.0 MB" and byte_text(12_345_000_000) == "12.35 GB"
    assert byte_text(100_000_000) == "0.10 GB" and rate_text(50_000_000) == "50.0 MB/s"
