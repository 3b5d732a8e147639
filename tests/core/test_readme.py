"""The README's config reference is the schema's, key for key."""
from pathlib import Path

from launch.config_reference import reference_lines


def test_readme_lists_every_config_key():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [line for line in reference_lines() if line not in readme]
    assert not missing, missing[:3]
    ci = (Path(__file__).parents[2] / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme
