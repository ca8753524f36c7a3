"""Server (assembly.py): the object graph is made outside the lifespan, changes nothing of the process, and the
app's lifespan starts and stops it; the process-wide effects are the entry point's (cli/process.py)."""

from __future__ import annotations

import gc
import logging
import warnings
from pathlib import Path

from starlette.testclient import TestClient

from gitops_flow.app import server_app
from gitops_flow.assembly import Server
from gitops_flow.stores.memory import MemoryStore
from tests.gitrepo import Remote
from tests.served import Served, echo_flow, settings


def _process_state() -> tuple[object, ...]:
    """The warnings filters, every filter on a logger or a handler, and the garbage collector's freeze."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found = [x for logger in loggers if isinstance(logger, logging.Logger) for x in (logger, *logger.handlers)]
    return tuple(warnings.filters), {id(f) for x in found for f in x.filters}, gc.get_freeze_count()


def test_a_server_is_built_without_io_and_without_touching_the_process(remote: Remote, tmp_path: Path) -> None:
    remote.commit({"flows/echo.json": echo_flow()})
    remote.push()
    gc.unfreeze()
    before = _process_state()
    store = MemoryStore()
    server = Server(settings(remote, tmp_path, freeze_heap=True), store=store)
    assert _process_state() == before  # no warnings filter, no log filter, no heap freeze
    assert not (tmp_path / "server" / "repo").exists()  # nothing fetched yet: start() does that
    assert server.deps.store is store and server.deps.reconciler is server.reconciler
    assert server.reconciler.versions == []
    app = server_app(server)
    assert app.state.deps is server.deps  # the handlers read the very graph the test built
    with TestClient(app) as client:
        served = Served(client, remote, app)
        served.wait_ready()
        assert served.invoke("echo", {"question": "hi"}).json()["output"] == "one"
    assert _process_state() == before  # nor while serving and after: the entry point's doing
