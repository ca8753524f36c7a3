"""Test data that comes from npm: GitHub's published REST API description (@octokit/openapi) and real webhook
payloads (@octokit/webhooks-examples), pinned in tests/npm/package-lock.json.

They are installed into tests/npm/node_modules by ``npm ci --prefix tests/npm`` (what .ci/run does); a test that
needs them and finds them missing runs that command itself, once. npm keeps the tarballs in its cache (~/.npm), so
after the first fetch the install works offline (``npm ci --offline --prefix tests/npm``).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

NPM_DIR = Path(__file__).resolve().parent / "npm"
MODULES = NPM_DIR / "node_modules" / "@octokit"
OPENAPI = MODULES / "openapi" / "generated" / "api.github.com.json"
WEBHOOK_EXAMPLES = MODULES / "webhooks-examples" / "api.github.com" / "index.json"


def ensure_installed() -> None:
    """Install the pinned packages when they are missing; fails the test with npm's reason when it cannot."""
    if OPENAPI.is_file() and WEBHOOK_EXAMPLES.is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise AssertionError("the GitHub tests need npm (apt-get install npm), then: npm ci --prefix tests/npm")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(NPM_DIR)], capture_output=True, text=True, timeout=600
    )
    if done.returncode or not OPENAPI.is_file():
        raise AssertionError(f"npm ci --prefix tests/npm failed ({done.returncode}):\n{done.stderr[-2000:]}")


@functools.cache
def openapi() -> dict[str, Any]:
    """GitHub's REST API description (api.github.com, OpenAPI 3.0), as @octokit/openapi publishes it."""
    ensure_installed()
    data: dict[str, Any] = json.loads(OPENAPI.read_text())
    return data


@functools.cache
def webhook_examples() -> dict[str, list[dict[str, Any]]]:
    """Real webhook payloads by event name (``push``, ``create``, ...), as @octokit/webhooks-examples has them."""
    ensure_installed()
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in json.loads(WEBHOOK_EXAMPLES.read_text()):
        found[entry["name"]] = entry["examples"]
    return found
