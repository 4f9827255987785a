import pytest

from mlmesh.common.errors import NotFound
from mlmesh.gateway.domain.naming import check_version, team_model_name, triton_name

pytestmark = pytest.mark.timeout(10)


def test_round_trip() -> None:
    assert triton_name("team-a", "double") == "team-a--double"
    assert team_model_name("team-a", "team-a--double") == "double"
    assert team_model_name("team_b", triton_name("team_b", "llama-3_8b")) == "llama-3_8b"


@pytest.mark.parametrize(
    ("team", "model"),
    [
        ("team-a", ""),
        ("team-a", "Double"),
        ("team-a", "a/b"),
        ("team-a", "x--y"),
        ("a--b", "c"),
        ("", "m"),
        ("team-a", "../x"),
        ("team-a", "m" * 129),
    ],
)
def test_invalid_names_are_not_found(team: str, model: str) -> None:
    with pytest.raises(NotFound):
        triton_name(team, model)


def test_another_teams_triton_name_is_not_found() -> None:
    with pytest.raises(NotFound):
        team_model_name("team-b", "team-a--double")
    with pytest.raises(NotFound):
        team_model_name("team", "team-a--double")  # a prefix of the team is not the team


def test_versions_are_numbers_or_empty() -> None:
    assert check_version("m", "") == ""
    assert check_version("m", "12") == "12"
    for bad in ("v1", "-1", "1.0", "1/2"):
        with pytest.raises(NotFound):
            check_version("m", bad)
