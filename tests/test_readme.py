"""The README stands on its own in a clone: it names no path outside the repository, and the
design document it points to is in the repository."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_names_no_path_outside_the_repository():
    # (a parent directory, or the workspace this project was developed in)
    outside = re.findall(r"(?:\.\./|/work/)[\w./-]*", README)
    assert not outside, outside


def test_readme_links_resolve_inside_the_repository():
    links = re.findall(r"\]\(([^)#:]+)\)", README)  # relative markdown links
    assert "DESIGN.md" in links
    for link in links:
        target = (ROOT / link).resolve()
        assert target.is_relative_to(ROOT) and target.exists(), link


def test_design_states_the_momentum_mapping():
    design = " ".join((ROOT / "DESIGN.md").read_text().split())
    assert "momentum = β with dampening = β (not 1 − β" in design
    assert "b_t − v_t = β^t g₁" in design
