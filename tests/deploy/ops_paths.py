"""Where the deploy tests find the repository's deploy/ folder and the venv's tools."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def kubectl_path() -> str | None:
    """kubectl for `kubectl kustomize`: $KUBECTL, deploy/k8s/install-kubectl.sh's copy, PATH."""
    for candidate in (
        os.environ.get("KUBECTL"),
        str(ROOT / ".cache" / "kubectl" / "kubectl"),
        shutil.which("kubectl"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None
