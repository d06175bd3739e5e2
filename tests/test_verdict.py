"""The verdict every search ends with (enas/nas/verdict.py): the controller in words, the
chosen architecture against random ones on the same supernet, and the warning of a
config whose controller never trains."""
import math

import pytest

from enas.nas import verdict
from enas.cli import main
from enas.config import load_search
from conftest import TINY_NB201, write_cifar, write_config

LEARNED = {"kind": "enas", "trained": True, "why_not": None, "entropy_start": 0.998, "entropy_end": 0.62,
           "collapse_epochs": []}


def test_compare_is_the_margin_over_the_random_mean_in_standard_errors():
    random = [0.40, 0.44, 0.48, 0.52, math.nan]  # a non-finite score is left out
    c = verdict.compare(0.60, 0.01, random)
    sd = math.sqrt(sum((v - 0.46) ** 2 for v in random[:4]) / 3)
    assert c["random_draws"] == 4 and c["random_mean"] == pytest.approx(0.46) and c["beats"] == 4
    assert c["difference_se"] == pytest.approx(math.hypot(sd / 2, 0.01))
    assert c["margin_in_se"] == pytest.approx(0.14 / math.hypot(sd / 2, 0.01))


def test_a_chosen_architecture_better_than_random_says_by_how_much():
    cmp = verdict.compare(0.60, 0.01, [0.50, 0.52, 0.48, 0.50, 0.51, 0.49, 0.50, 0.50])
    text = verdict.text(LEARNED, {**cmp, "metric": "valid_accuracy", "chosen_metric": 0.6, "random_metric": 0.5})
    z = cmp["margin_in_se"]
    assert z > 2
    assert text.startswith("The controller learned: policy entropy fell from 99.8% to 62.0% of uniform's, "
                           "no collapse.")
    assert (f"The chosen architecture beats random architectures on this supernet by {z:.1f} standard errors "
            f"(valid accuracy 0.600 against 0.500 for 8 random ones on the same validation data).") in text


def test_a_chosen_architecture_no_better_than_random_says_so_and_why():
    cmp = verdict.compare(0.50, 0.02, [0.40, 0.60, 0.45, 0.55, 0.50, 0.52, 0.48, 0.50])
    assert abs(cmp["margin_in_se"]) < 2
    text = verdict.text(LEARNED, cmp)
    assert "The chosen architecture is no better than random architectures on this supernet (+0.0 standard " \
           "errors; score 0.500 against 0.500 for 8 random ones" in text
    assert text.endswith("the search did not help here, because the supernet's scores do not separate what the "
                         "controller found from random architectures; a longer search or more validation data may.")
    still = {**LEARNED, "entropy_end": 0.99}
    assert verdict.text(still, cmp).startswith("The controller barely learned: policy entropy stayed at 99.0% of "
                                               "uniform's (from 99.8%).")
    assert verdict.text(still, cmp).endswith("because the policy stayed near uniform, so its candidates were much "
                                             "like random ones.")
    below = verdict.compare(0.30, 0.01, [0.50, 0.52, 0.48, 0.50])
    assert "scores below random architectures on this supernet (-" in verdict.text(LEARNED, below)


def test_the_controller_sentence_names_a_collapse_and_a_controller_that_never_trained():
    cmp = verdict.compare(0.50, 0.0, [0.5, 0.5])
    collapsed = verdict.text({**LEARNED, "entropy_end": 0.05, "collapse_epochs": [2, 3]}, cmp)
    assert collapsed.startswith("The controller learned but may have collapsed: policy entropy went from 99.8% to "
                                "5.0% of uniform's, with a collapse warning at epoch 2, 3.")
    idle = {**LEARNED, "trained": False, "why_not": "controller.updates_per_epoch is 0", "entropy_end": 0.998}
    text = verdict.text(idle, cmp)
    assert text.startswith("The controller did not train (controller.updates_per_epoch is 0)")
    assert text.endswith("because the controller did not train.")


def test_a_config_whose_controller_never_trains_warns(tmp_path):
    cfg = load_search(write_config(tmp_path, TINY_NB201, "c.yaml",
                                   search={"epochs": 1, "controller_warmup_epochs": 1}))
    assert verdict.warning(cfg) == (
        "warning: the controller never trains in this search (search.epochs (1) is not above "
        "search.controller_warmup_epochs (1): every epoch is a warm-up); its architectures come from the untrained, "
        "near-uniform policy. Raise search.epochs above the warm-up to let it learn.")
    ok = load_search(write_config(tmp_path, TINY_NB201, "d.yaml", search={"epochs": 2, "controller_warmup_epochs": 1}))
    assert verdict.warning(ok) is None
    random = load_search(write_config(tmp_path, TINY_NB201, "e.yaml", controller={"kind": "random"},
                                      search={"epochs": 1, "controller_warmup_epochs": 1}))
    assert verdict.warning(random) is None  # random search by choice


@pytest.mark.slow
def test_a_search_ends_with_its_verdict_on_the_console_and_atop_the_report(tmp_path, capsys):
    write_cifar(tmp_path / "data")
    cfg = write_config(tmp_path, TINY_NB201, "c.yaml", search={"epochs": 1, "controller_warmup_epochs": 1})
    run = tmp_path / "run"
    assert main(["search", str(cfg), "--data-dir", str(tmp_path / "data"), "--run-dir", str(run),
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any(line.startswith("warning: the controller never trains in this search") for line in err[:5])
    assert err[-1].startswith("verdict: The controller did not train (search.epochs (1) is not above")
    assert "random architectures on this supernet" in err[-1]
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    top = page.index('<section id="verdict">')
    assert top < page.index('<section id="identity">')
    assert "The controller did not train" in page[top:page.index("</section>", top)]
    assert "the controller never trains in this search" in page  # the warning, in the warnings section
