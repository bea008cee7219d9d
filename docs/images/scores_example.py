"""Makes docs/images/scores.png and the output shown on docs/scores.md: the docs' example,
`numerflow scores --model-name my_model --report reports/model`, run against the test suite's
fake Numerai server (tests/fake_numerai.py) with 30 resolved and 4 resolving rounds planted, and a
validation report whose per-era CORR is drawn from N(0.02, 0.025). No account or network needed.

    .venv/bin/python docs/images/scores_example.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import numerapi.base_api
    from typer.testing import CliRunner

    from numerflow.cli import app
    from tests.fake_numerai import PUBLIC_ID, SECRET_KEY, FakeNumerai

    server = FakeNumerai().start()
    numerapi.base_api.API_TOURNAMENT_URL = server.url
    os.environ.update(NUMERAI_PUBLIC_ID=PUBLIC_ID, NUMERAI_SECRET_KEY=SECRET_KEY, NO_PROXY="127.0.0.1")
    server.models = {"my_model": "11111111-2222-3333-4444-555555555555"}
    rng = np.random.default_rng(5)
    for number in range(1000, 1034):
        corr = rng.normal(0.015, 0.025)
        server.live.add_round(server.models["my_model"], number,
                              {"v2_corr20": corr, "mmc": 0.3 * corr + rng.normal(0, 0.008),
                               "bmc": 0.2 * corr + rng.normal(0, 0.006)},
                              resolved=number < 1030, day=20 if number < 1030 else 1034 - number, days=1,
                              payout=round(0.5 * corr * 10, 4))
    folder = Path(tempfile.mkdtemp())
    os.chdir(folder)
    report = folder / "reports" / "model"
    report.mkdir(parents=True)
    per_era = [{"era": f"{575 + i:04d}", "numerai_corr": v} for i, v in enumerate(rng.normal(0.02, 0.025, 200))]
    (report / "report.json").write_text(json.dumps({"source": "models/model.pt", "per_era": per_era}))
    result = CliRunner().invoke(app, ["scores", "--model-name", "my_model", "--report", "reports/model"])
    print(result.output)
    shutil.copyfile(folder / "scores" / "my_model" / "scores.png", ROOT / "docs" / "images" / "scores.png")
    server.stop()


if __name__ == "__main__":
    main()
