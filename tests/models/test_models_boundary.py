import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FORBIDDEN = ("fastapi", "redis", "prometheus_client", "service", "sklearn")


def test_models_imports_no_io_packages() -> None:
    code = (
        "import sys, models, models.learner, models.bench_digits\n"
        "assert models.__file__.startswith(sys.argv[1]), models.__file__\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True,
                         check=True, timeout=60, cwd=REPO)
    assert out.stdout.strip() == ""
