"""Tables 1 and 2: rows are methods, columns dataset x mask, the paper's values beside ours."""

import pandas as pd
import pytest

from physdiff.metrics.paper_tables import paper_table, to_latex, to_markdown


def _rows():
    rows = []
    for method, scores in {"tv": [0.80, 0.90], "dart": [0.95, 0.97], "drift_physics_only": [0.70, 0.72]}.items():
        for i, s in enumerate(scores):
            rows.append({"modality": "mri", "dataset": "brats", "mask": "gaussian_R4", "sample": str(i),
                         "method": method, "ssim": s, "psnr": 30.0, "wall_s": 1.0, "diverged": False})
    rows.append({"modality": "stem", "dataset": "hexagonal", "mask": "full", "sample": "WC_0001_0",
                 "method": "drift", "ssim": 0.5, "psnr": 20.0, "wall_s": 1.0, "diverged": False})
    return pd.DataFrame(rows)


def test_table1_has_mean_std_n_and_the_papers_values_in_their_own_columns():
    table = paper_table(_rows(), "table1", labels={"dart": "DART (G=2)"})
    assert list(table.method) == ["TV", "DRIFT's physics-only twin", "DART (G=2)"]  # baselines first, ours last
    cell = table.set_index("method").loc["TV", "MRI (BraTS-like) gaussian_R4"]
    assert cell == "0.850 ± 0.071 (N=2)"
    assert table.set_index("method").loc["DART (G=2)", "paper MRI"] == "0.968"
    assert table.set_index("method").loc["DRIFT's physics-only twin", "paper MRI"] == ""
    # out-of-distribution rows stay out of Table 1
    assert not any("hexagonal" in c for c in table.columns)


def test_table2_holds_only_out_of_distribution_rows():
    table = paper_table(_rows(), "table2")
    assert list(table.method) == ["DRIFT"]
    assert table.iloc[0]["4D-STEM OOD (hexagonal) full"] == "0.500 (N=1)"
    assert table.iloc[0]["paper 4D-STEM"] == "0.981"


def test_markdown_and_latex_render_every_cell():
    table = paper_table(_rows(), "table1")
    md = to_markdown(table, "Table 1")
    assert md.count("\n| ") == len(table) + 1 and "0.960 ± 0.014 (N=2)" in md
    tex = to_latex(table, "Table 1")
    assert "\\toprule" in tex and "0.960 $\\pm$ 0.014" in tex and tex.count("\\\\") == len(table) + 1


@pytest.mark.parametrize("name", ["table1", "table2"])
def test_an_empty_frame_of_that_split_gives_an_empty_table(name):
    rows = _rows()
    rows = rows[rows.dataset == ("hexagonal" if name == "table1" else "brats")]
    assert paper_table(rows, name).empty


def test_the_command_line_prints_both_tables_from_a_results_folder(tmp_path, capsys):
    import json

    from physdiff.metrics.paper_tables import main
    from physdiff.results import Layout

    lay = Layout(tmp_path)
    for i, row in enumerate(_rows().to_dict("records")):
        path = lay.recon(row["modality"], row["dataset"], row["method"], str(i), mask=row["mask"], suffix=".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row))
    tuning = lay.tuning("mri", "dart")
    tuning.parent.mkdir(parents=True)
    tuning.write_text("{}")  # tuning records are not metrics rows
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "# Table 1" in out and "| DART | 0.960 ± 0.014 (N=2)" in out and "# Table 2" in out
