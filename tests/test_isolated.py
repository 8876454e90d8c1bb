import pytest

from fedcore.experiment.results import ExperimentResult, ResultsError


@pytest.fixture(scope="module")
def isolated(small_run):
    return small_run[0].isolated


def test_isolated_models_never_learn_their_missing_digits(isolated, small_config):
    assert [c.client for c in isolated] == [1, 2, 3]
    for client, excluded in zip(isolated, small_config.excluded_digits, strict=True):
        assert client.excluded == list(excluded)
        assert 0.55 < client.accuracy < 0.75, client.accuracy
        assert client.missing_accuracy is not None and client.missing_accuracy <= 0.01
        assert set(client.subset_accuracy) == {"1,3,7", "2,5,8", "4,6,9"}
        others = [v for k, v in client.subset_accuracy.items() if k != ",".join(map(str, excluded))]
        assert min(others) > 0.85  # it does learn the digits it sees
        assert len(client.loss) == 1 and client.train_size > 13_000
        # A missing digit's row of the confusion matrix has no correct prediction.
        assert all(client.confusion[d][d] == 0 for d in excluded)
        assert sum(map(sum, client.confusion)) == 10_000


def test_same_seed_same_numbers(isolated, small_config, engine):
    again = engine.submit(small_config, "isolated", use_cache=False).result().isolated
    assert again == isolated


def test_progress_events(small_run):
    _, events = small_run
    epochs = sorted((client, epoch) for kind, (client, epoch, _) in _epochs(events))
    assert epochs == [(1, 1), (2, 1), (3, 1)]  # clients train in parallel workers
    isolated_events = [payload for kind, payload in events if kind == "isolated"]
    assert isolated_events == [small_run[0].isolated]  # sent before the run ends


def _epochs(events):
    return [(kind, payload) for kind, payload in events if kind == "epoch"]


def test_results_json_round_trip(isolated, small_config, tmp_path):
    result = ExperimentResult(config=small_config, isolated=isolated, timings={"isolated": 1.5})
    path = result.save(tmp_path / "out" / "results.json")
    assert ExperimentResult.load(path) == result
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp files left


def test_loading_a_broken_results_file_names_it(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"config": {"num_clients": 3')
    with pytest.raises(ResultsError, match="results.json: not a fedcore results file"):
        ExperimentResult.load(path)
