"""The reproduction tables: the published figures load, every row is a valid
experiment with the paper's settings, rows are chosen by their words, and a
reproduced table someone hands the app is checked before it is drawn."""

from __future__ import annotations

import pytest

from fedcore.engine.sweep import to_csv
from fedcore.experiment.specs import ConfigError
from fedcore.reproduction.reproduce import (
    Measured,
    best_rate,
    make_plan,
    skipped_row,
    summary_row,
    to_markdown,
)
from fedcore.reproduction.table_file import TableFileError, read_reproduced_table
from fedcore.reproduction.tables import find_table, tables


def test_every_table_loads_with_its_rows_and_sources() -> None:
    known = tables()
    assert set(known) == {"mcmahan2017-table1", "mcmahan2017-table2", "niid-bench-mnist"}
    assert len(known["mcmahan2017-table1"].rows) == 40  # 2 models x 2 splits x 2 B x 5 C
    assert len(known["niid-bench-mnist"].rows) == 20  # 4 algorithms x 5 partitions
    for table in known.values():
        keys = [row.key for row in table.rows]
        assert len(set(keys)) == len(keys), table.name
        assert all(row.source for row in table.rows)


def test_table1_rows_are_the_papers_settings() -> None:
    table = find_table("mcmahan2017-table1")
    (row,) = table.select("2nn,non-iid,B=10,C=0.1")
    assert row.paper == 664
    config = table.config(row, 0.1, 42)
    assert (config.num_clients, config.split, config.model) == (100, "shards:2", "2nn")
    assert (config.local_epochs, config.batch_size, config.momentum) == (1, 10, 0.0)
    assert config.clients_per_round == 10 and config.target_accuracy == 97.0
    assert config.stop_at_target == "yes" and config.num_rounds == 2 * 664
    (one_client,) = table.select("2nn,iid,B=inf,C=0.0")
    config = table.config(one_client, 0.1, 42)
    assert config.clients_per_round == 1  # the paper's C=0: one client a round
    assert config.batch_size >= 600  # B=inf: the whole partition in one batch
    assert table.config(one_client, 0.1, 42, max_rounds=3).num_rounds == 3


def test_niid_bench_rows_and_the_quick_preset() -> None:
    table = find_table("niid-bench-mnist")
    (row,) = table.select("scaffold,#C=2")
    config = table.config(row, 0.01, 42)
    assert (config.num_clients, config.model, config.split) == (10, "lenet", "classes:2")
    assert (config.num_rounds, config.local_epochs, config.batch_size) == (50, 10, 64)
    assert config.strategy_name == "scaffold" and config.momentum == 0.9
    quick = table.config(row, 0.01, 42, quick=True)
    assert (quick.num_rounds, quick.local_epochs) == (10, 1)
    with pytest.raises(ConfigError, match="no --quick preset"):
        find_table("mcmahan2017-table1").config(table.rows[0], 0.1, 42, quick=True)


def test_rows_are_chosen_by_their_words() -> None:
    table = find_table("mcmahan2017-table1")
    assert len(table.select("2nn,iid")) == 10
    assert len(table.select("2nn,iid,B=10;cnn,iid,B=10,C=0.1")) == 6
    with pytest.raises(ConfigError, match="no row word 'B=20'"):
        table.select("2nn,B=20")
    with pytest.raises(ConfigError, match="no row of mcmahan2017-table1 has all"):
        table.select("2nn,E=5")


def test_a_plan_leaves_the_heavy_and_unpublished_rows_out_unless_named() -> None:
    plan = make_plan("mcmahan2017-table1")
    assert len(plan.rows) == 16 and len(plan.skipped) == 24  # 20 CNN rows, 4 "—" 2NN rows
    assert all(row.key.startswith("2nn") and row.paper for row in plan.rows)
    assert len(plan.cells) == 16 * len(plan.learning_rates)
    unpublished = [row for row in plan.skipped if row.paper is None]
    assert [row.key for row in unpublished if row.key.startswith("2nn")] == [
        "2nn,iid,E=1,B=inf,C=0.5", "2nn,iid,E=1,B=inf,C=1.0",
        "2nn,non-iid,E=1,B=inf,C=0.5", "2nn,non-iid,E=1,B=inf,C=1.0",
    ]  # fmt: skip
    note = skipped_row(plan, unpublished[0])["note"]
    assert note.startswith("not run: ") and note.endswith(
        "on this machine, and the paper gives no figure (name it with --rows)"
    )
    assert "no figure" not in skipped_row(plan, plan.skipped[-1])["note"]  # a CNN row's
    assert len(make_plan("mcmahan2017-table1", rows="2nn,B=inf").rows) == 10  # named: all run
    named = make_plan(
        "mcmahan2017-table1", rows="cnn,iid,B=10,C=0.1", seeds=2, learning_rates="0.1"
    )
    assert [row.key for row in named.rows] == ["cnn,iid,E=5,B=10,C=0.1"] and not named.skipped
    assert [c.config.seed for c in named.cells] == [42, 43]
    with pytest.raises(ConfigError, match="unknown table 'table9'"):
        make_plan("table9")
    with pytest.raises(ConfigError, match="learning_rate"):
        make_plan("mcmahan2017-table1", learning_rates="0.1,-1")
    with pytest.raises(ConfigError, match="--seeds 0"):
        make_plan("mcmahan2017-table1", seeds=0)


def test_the_best_learning_rate_reaches_the_target_first() -> None:
    plan = make_plan(
        "mcmahan2017-table1", rows="2nn,iid,B=10,C=0.1", seeds=2, learning_rates="0.05,0.1,0.2"
    )
    table, row = plan.table, plan.rows[0]
    measured = Measured(row, {0.05: [120.0, 130.0], 0.1: [90.0, 80.0], 0.2: [None, 60.0]})
    assert best_rate(table, measured) == 0.1  # 0.2 is faster once, but missed in one seed
    line = summary_row(plan, measured)
    assert (line["measured"], line["paper"], line["learning_rate"]) == (85.0, 87, 0.1)
    assert line["ratio"] == pytest.approx(85 / 87)
    missed = summary_row(plan, Measured(row, {0.1: [None, 70.0]}))
    assert (
        missed["measured"] is None and "not reached within 174 rounds in 1 of 2" in missed["note"]
    )
    markdown = to_markdown(plan, [line], "python -m fedcore reproduce ...")
    assert "| 2nn,iid,E=1,B=10,C=0.1 | 87 | 85 ± 7 | 0.98 | 0.1 | 2 |" in markdown


def _csv(lines: list[dict]) -> bytes:
    return to_csv(lines).encode()


def test_a_reproduced_table_file_is_checked_before_it_is_drawn() -> None:
    good = [
        {"table": "mcmahan2017-table1", "row": "2nn,iid,E=1,B=10,C=0.1", "measure": "rounds",
         "paper": 1, "measured": 85},
        {"table": "mcmahan2017-table1", "row": "2nn,iid,E=1,B=10,C=0.2", "measure": "rounds",
         "paper": 1, "measured": ""},
    ]  # fmt: skip
    reproduced = read_reproduced_table("t.csv", _csv(good))
    assert [(row.paper, value) for row, value in reproduced.measured] == [(87, 85.0), (77, None)]
    frame = reproduced.frame()  # the paper's figures from fedcore's transcription, not the file
    assert sorted(frame["value"]) == [77.0, 85.0, 87.0]

    def refused(lines: list[dict] | bytes, message: str) -> None:
        contents = lines if isinstance(lines, bytes) else _csv(lines)
        with pytest.raises(TableFileError, match=message):
            read_reproduced_table("t.csv", contents)

    refused([{**good[0], "measured": "<script>"}], "line 2: measured '<script>' is not a number")
    refused([{**good[0], "measured": "nan"}], "not in 0-10000")
    refused([{**good[0], "row": "2nn,iid"}], "'2nn,iid' is not a row of mcmahan2017-table1")
    refused([{**good[0], "table": "mine"}], "unknown table 'mine'")
    refused([good[0], good[0]], "line 3: row '2nn,iid,E=1,B=10,C=0.1' is given twice")
    refused([{"x": 1}], "no column 'table'")
    refused(b"\xff\xfe", "not a CSV table")
    refused(b"table,row,measure,measured\n" + b"x" * (2**20), "more than the 1 MB")
