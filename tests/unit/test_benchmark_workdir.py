"""A benchmark's temporary work directory goes when the run succeeds and stays when it fails."""

import shutil
from pathlib import Path

import pytest

from benchmarks import workdir


def _main(code, made):
    def main():
        path = Path(workdir.temporary("ffs-test-workdir-"))
        (path / "data").write_text("x")
        made.append(path)
        if isinstance(code, BaseException):
            raise code
        return code
    return main


@pytest.mark.parametrize("code", [0, None])
def test_a_run_that_succeeds_removes_what_it_made(code):
    made: list[Path] = []
    assert workdir.run(_main(code, made)) == code
    assert made and not made[0].exists()


def test_a_run_that_fails_keeps_it_and_says_where(capsys):
    made: list[Path] = []
    try:
        assert workdir.run(_main(2, made)) == 2
        assert (made[0] / "data").exists()
        assert str(made[0]) in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            workdir.run(_main(KeyboardInterrupt(), made))
        assert made[1].exists()
        assert "KeyboardInterrupt" in capsys.readouterr().err
        workdir.run(_main(0, made))  # a later run removes only its own
        assert made[1].exists() and not made[2].exists()
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
