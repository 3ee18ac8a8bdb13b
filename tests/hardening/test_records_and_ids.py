"""Secrets stay out of records, record files never collide, session ids cannot be predicted from the seed
alone unless the seed was chosen explicitly (then runs stay reproducible)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtsim.simulator.history import History
from rtsim.simulator.serve import add_server_options, config_from_args
from rtsim.simulator.tokens import key_id
from tests.support.faults import http, session_id_of
from tests.support.wire import open_session

BOB = "sk-bob-very-secret-key"


async def test_records_hold_key_ids_never_keys_or_the_admin_token(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = await server_factory(pacing=0.0, record_dir=str(tmp_path), admin_token="adm1n-t0ken-s3cret")
    ws = await open_session(server, key=BOB)
    headers = {"X-Rtsim-Admin-Token": "adm1n-t0ken-s3cret"}
    scheduled = {"kind": "stall", "target": {"key": BOB}, "when": {"after_ms": 60_000}}
    status, _, _ = await http(server, "POST", "/_rtsim/faults", scheduled, headers=headers)
    assert status == 201
    body = {"kind": "drop", "target": {"key": BOB}}
    status, _, _ = await http(server, "POST", "/_rtsim/faults", body, headers=headers)
    assert status == 200
    await ws.close()
    server.history.flush()
    assert server.history.path is not None and server.history.path.parent == tmp_path
    text = server.history.path.read_text()
    assert "adm1n-t0ken-s3cret" not in text and BOB not in text
    assert key_id(BOB) in text
    (fault,) = server.history.select(kind="fault")
    assert fault["target"] == {"key_id": key_id(BOB)}
    (start,) = server.history.select(kind="server")[:1]
    assert start["config"]["admin_token"] == "<set>"


def test_two_histories_started_in_one_second_write_two_files(tmp_path: Path) -> None:
    histories = [History(tmp_path) for _ in range(5)]
    for index, history in enumerate(histories):
        history.record("server", event="start", n=index)
        history.close()
    paths = {h.path for h in histories}
    assert len(paths) == 5 and len(list(tmp_path.glob("*.jsonl"))) == 5
    for path in paths:
        assert path is not None and len(path.read_text().splitlines()) == 1


def _config(*argv: str) -> Any:
    parser = argparse.ArgumentParser()
    add_server_options(parser)
    return config_from_args(parser.parse_args(list(argv)))


async def test_session_ids_need_the_process_secret_unless_the_seed_is_explicit(
    server_factory: Callable[..., Any],
) -> None:
    implicit_a, implicit_b = _config(), _config()
    assert implicit_a.seed == implicit_b.seed == 0
    assert implicit_a.id_secret and implicit_a.id_secret != implicit_b.id_secret
    assert _config("--seed", "7").id_secret == ""

    async def first_session_id(config: Any) -> str:
        server = await server_factory(pacing=0.0, seed=config.seed, id_secret=config.id_secret)
        ws = await open_session(server)
        sid = await session_id_of(ws, server)
        await ws.close()
        return sid

    assert await first_session_id(implicit_a) != await first_session_id(implicit_b)
    explicit = _config("--seed", "7")
    assert await first_session_id(explicit) == await first_session_id(_config("--seed", "7"))
