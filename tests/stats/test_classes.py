"""Class-level views over a scan: AUC and standardized differences, the output layer's
weights and contributions, the 2-D map of the feature space, liveness from the scan."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from featapp.data.dataset import Dataset
from featapp.stats import classes, projection
from featapp.stats.analysis import load_or_scan
from featapp.stats.liveness import liveness_of


def brute_force_auc(values: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """P(positive > negative) + P(tie) / 2, over every pair: the definition, not the formula."""
    ones, zeros = values[positive], values[~positive]
    greater = (ones[:, None, :] > zeros[None, :, :]).mean(axis=(0, 1))
    equal = (ones[:, None, :] == zeros[None, :, :]).mean(axis=(0, 1))
    return greater + equal / 2


# -- hand-made statistics ------------------------------------------------------------------------------------
def test_a_channel_that_fires_only_for_dogs_ranks_first_with_auc_1():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 20)
    values = rng.uniform(0, 1, size=(40, 6))  # five channels of noise
    values[:, 3] = np.where(labels == 1, rng.uniform(0.5, 2.0, 40), 0.0)  # fires only for dogs
    table = classes.separation(values, labels, ["cats", "dogs"], layer="toy")
    best = table.ranked()[0]
    assert best.channel == 3 and best.auc == 1.0 and best.strength == 1.0
    assert best.fires_for == "dogs" and not best.never_fires
    assert best.class_means[0] == 0.0 and best.class_means[1] == pytest.approx(values[20:, 3].mean())
    assert table.top_for("dogs", 1)[0].channel == 3
    assert all(row.channel != 3 for row in table.top_for("cats", 6))


def test_a_cat_channel_has_auc_0_and_leads_the_cat_list():
    labels = np.array([0, 0, 0, 1, 1, 1])
    values = np.zeros((6, 3))
    values[:, 0] = [3, 4, 5, 0, 0, 0]  # cats only
    values[:, 1] = [0.1, 0.2, 0.3, 0.2, 0.3, 0.4]  # a weak dog channel
    # channel 2 is dead: zero everywhere
    table = classes.separation(values, labels, ["cats", "dogs"])
    assert table.auc[0] == 0.0 and table.row(0).fires_for == "cats"
    assert table.ranked()[0].channel == 0
    assert [row.channel for row in table.top_for("cats")] == [0]
    assert [row.channel for row in table.top_for("dogs")] == [1]
    dead = table.row(2)
    assert dead.never_fires and dead.auc == 0.5 and dead.effect == 0.0
    assert table.ranked()[-1].channel == 2


def test_ties_count_half():
    # cats 1, 2, 2; dogs 2, 3. Pairs (dog, cat): 2>1, 2=2, 2=2, 3>1, 3>2, 3>2 -> (5 + 2 * 0.5 - 1) ... by hand:
    # wins 4 (2>1, 3>1, 3>2, 3>2), ties 2 (2=2 twice), losses 0 -> AUC (4 + 1) / 6.
    values = np.array([1.0, 2.0, 2.0, 2.0, 3.0])
    positive = np.array([False, False, False, True, True])
    assert classes.rank_sum_auc(values, positive)[0] == pytest.approx(5 / 6)
    everything_tied = classes.rank_sum_auc(np.ones((7, 2)), np.array([0, 1, 0, 1, 1, 0, 0], bool))
    assert everything_tied.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("seed", range(5))
def test_rank_sum_formula_equals_the_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(2, 60))
    positive = rng.random(count) < 0.4
    positive[0], positive[-1] = True, False  # both classes present
    values = np.round(rng.normal(size=(count, 9)), 1)  # rounded: many ties
    values[:, 0] = 0.0
    assert np.allclose(classes.rank_sum_auc(values, positive), brute_force_auc(values, positive))
    assert np.isnan(classes.rank_sum_auc(values, np.zeros(count, bool))).all()


def test_standardized_difference_is_the_pooled_cohens_d():
    rng = np.random.default_rng(3)
    ones, zeros = rng.normal(2, 1, 30), rng.normal(0, 2, 50)
    values = np.concatenate([ones, zeros])
    positive = np.arange(80) < 30
    pooled = np.sqrt((29 * ones.var(ddof=1) + 49 * zeros.var(ddof=1)) / 78)
    assert classes.standardized_difference(values, positive)[0] == pytest.approx((ones.mean() - zeros.mean()) / pooled)
    constant = classes.standardized_difference(np.array([0.0, 0.0, 1.0, 1.0]), np.array([0, 0, 1, 1], bool))
    assert constant[0] == np.inf
    row = classes.separation(np.array([[0.0], [0.0], [1.0], [1.0]]), np.array([0, 0, 1, 1]), ["a", "b"]).row(0)
    assert row.as_dict(["a", "b"])["effect"] is None, "JSON has no infinity"


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="one label per image"):
        classes.separation(np.zeros((3, 2)), np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="two classes"):
        classes.separation(np.zeros((3, 2)), np.array([0, 0, 0]), ["a"])
    with pytest.raises(ValueError, match="no class"):
        classes.separation(np.zeros((2, 2)), np.array([0, 1]), ["a", "b"], positive="c")


def test_contributions_sum_to_the_logit():
    weights = classes.OutputWeights(np.array([0.5, -1.0, 2.0, 0.0], np.float32), 0.25, "toy")
    activations = np.array([2.0, 1.0, 0.0, 9.0])
    rows = classes.contributions(activations, weights)
    assert [row.unit for row in rows] == [0, 1, 2, 3]  # |1.0| = |-1.0| keeps unit order, then zeros
    assert sum(row.contribution for row in rows) + weights.bias == pytest.approx(0.25 + 1.0 - 1.0)
    with pytest.raises(ValueError, match="expected 4 activations"):
        classes.contributions(np.zeros(3), weights)


# -- the projection ---------------------------------------------------------------------------------------------
def test_pca_of_points_on_a_line_puts_them_on_the_first_axis():
    t = np.linspace(-3, 5, 11)
    direction = np.array([2.0, 1.0, -6.0]) / np.sqrt(41.0)  # largest loading negative: the fit flips it
    points = 7.0 + t[:, None] * direction
    fitted = projection.fit_pca(points)
    assert fitted.explained[0] == pytest.approx(1.0) and fitted.explained[1] == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(fitted.coords[:, 1], 0.0, atol=1e-5)
    # Distances along the line are kept, and the sign is fixed (largest loading positive).
    assert np.allclose(np.abs(np.diff(fitted.coords[:, 0])), 0.8, atol=1e-5)
    assert np.allclose(fitted.components[0], -direction)
    # A new point on the line lands exactly; one off the line moves along the second axis.
    new = 7.0 + 10.0 * direction
    assert fitted.place(new)[0, 0] == pytest.approx(-(10.0 - t.mean()))
    assert fitted.exact


def test_pca_places_the_fitted_points_where_they_are():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(200, 16)) * np.linspace(5, 0.1, 16)
    fitted = projection.fit_pca(table)
    assert np.allclose(fitted.place(table[:10]), fitted.coords[:10], atol=1e-4)
    assert np.allclose(fitted.components @ fitted.components.T, np.eye(2))
    assert fitted.explained[0] > fitted.explained[1] > 0
    # The same axes as the SVD of the centred table itself (up to each axis's sign), and
    # for a table with fewer rows than columns, where that SVD is used directly.
    for data in (table, table[:10]):
        fitted = projection.fit_pca(data)
        centred = data - data.mean(axis=0)
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        for axis in range(2):
            assert abs(float(fitted.components[axis] @ vt[axis])) == pytest.approx(1.0, abs=1e-8)
        assert fitted.explained[0] == pytest.approx(singular[0] ** 2 / (singular**2).sum())
    with pytest.raises(ValueError, match="at least two photos"):
        projection.fit_pca(table[:1])


def test_nearest_neighbours_exclude_the_photo_itself():
    table = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    indices, distances = projection.nearest(table, table[0], k=3, exclude=0)
    assert indices.tolist() == [2, 3, 1] and distances.tolist() == [1.0, 1.0, 5.0]
    assert projection.nearest(table, table[0], k=1)[0].tolist() == [0]
    with pytest.raises(ValueError, match="features"):
        projection.nearest(table, np.zeros(3))


def test_methods_without_their_package_say_so():
    assert projection.available_methods()[0] == "pca"
    for method in ("tsne", "umap"):
        if method not in projection.available_methods():
            with pytest.raises(ValueError, match="not installed"):
                projection.fit(np.zeros((5, 3)), method)
    with pytest.raises(ValueError, match="method must be"):
        projection.fit(np.zeros((5, 3)), "magic")


# -- the committed model on a few real photos ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def scanned(tmp_path_factory, dataset, model):
    """3 cats and 3 dogs from the shared test split, copied and scanned (6 photos: seconds)."""
    root = tmp_path_factory.mktemp("class-photos")
    for image in dataset.sample("test", per_class=3, seed=4):
        target = root / "test" / image.class_name / image.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image.path, target)
    cache = tmp_path_factory.mktemp("class-cache")
    stats = load_or_scan(model, Dataset(root), "test", cache)
    return stats, root, cache


def test_liveness_from_the_scan_equals_counting_the_activations(model, scanned):
    stats, _, _ = scanned
    counted = liveness_of([model.activations(stats.paths)])
    health = classes.network_health(stats)
    assert list(health) == model.layer_names
    for name, live in health.items():
        expected = counted[name]
        assert live.channels == expected.channels and live.images == expected.images == len(stats)
        assert live.never_active_channels == expected.never_active_channels, name
        assert live.constant_map_share == pytest.approx(expected.constant_map_share), name
        assert live.sparsity == pytest.approx(expected.sparsity), name


def test_output_weights_reproduce_the_models_probability(model, scanned):
    stats, _, _ = scanned
    weights = classes.output_weights(model.path)
    dense = stats.values("dense")
    assert weights.weights.shape == (dense.shape[1],)
    logits = dense.astype(np.float64) @ weights.weights + weights.bias
    assert np.allclose(1 / (1 + np.exp(-logits)), stats.values("dense_1")[:, 0], atol=1e-5)
    for photo in range(len(stats)):
        rows = classes.contributions(dense[photo], weights)
        assert sum(r.contribution for r in rows) + weights.bias == pytest.approx(logits[photo], abs=1e-4)
        pushes = [abs(r.contribution) for r in rows]
        assert pushes == sorted(pushes, reverse=True)


def test_output_weights_of_a_file_that_is_not_onnx(tmp_path):
    from featapp.engine.model import ModelError

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="could not be read"):
        classes.output_weights(bad)


def test_layer_separation_on_real_photos_matches_the_definition(model, scanned):
    stats, _, _ = scanned
    positive = stats.labels == stats.class_names.index("dogs")
    for layer in ("conv2d_3", "dense"):
        for by in ("max", "mean"):
            table = classes.layer_separation(stats, layer, by=by)
            values = stats.values(layer, by)
            assert np.allclose(table.auc, brute_force_auc(values, positive))
            assert np.allclose(table.class_means[1], values[positive].mean(axis=0), atol=1e-6)
            strengths = [row.strength for row in table.ranked()]
            assert strengths == sorted(strengths, reverse=True)
    with pytest.raises(ValueError, match="too many to keep"):
        classes.layer_separation(stats, "flatten")


def test_projection_is_cached_and_places_a_new_photo_exactly(model, scanned):
    stats, _, cache = scanned
    first = projection.load_or_fit(stats, "dense", cache_dir=cache)
    path = projection.projection_path(stats, "dense", cache_dir=cache)
    stamp = path.stat().st_mtime_ns
    again = projection.load_or_fit(stats, "dense", cache_dir=cache)
    assert path.stat().st_mtime_ns == stamp and np.array_equal(first.coords, again.coords)
    assert np.allclose(again.components, first.components)
    # A photo run through the model now lands where the scan put it.
    acts = model.activations([stats.paths[2]])
    placed = again.place(projection.image_features(acts["dense"][0]))
    assert np.allclose(placed[0], first.coords[2], atol=1e-4)
    # A feature-map layer: per-channel means, the same from a fresh map.
    pooled = projection.load_or_fit(stats, "max_pooling2d_3", cache_dir=cache)
    assert projection.projection_path(stats, "max_pooling2d_3", cache_dir=cache) != path
    fresh = projection.image_features(acts["max_pooling2d_3"][0])
    assert np.allclose(pooled.place(fresh)[0], pooled.coords[2], atol=1e-4)
    # A damaged file is fitted again, not trusted.
    path.write_bytes(b"garbage")
    rebuilt = projection.load_or_fit(stats, "dense", cache_dir=cache)
    assert np.allclose(rebuilt.coords, first.coords, atol=1e-5)


def test_predicted_labels_and_thumbnails(model, scanned, tmp_path):
    stats, _, _ = scanned
    expected = [model.class_names.index(label) for label in model.predict(stats.paths).labels]
    assert projection.predicted_labels(stats).tolist() == expected
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    urls = projection.thumbnail_data_urls([stats.paths[0], broken], px=32)
    assert urls[0].startswith("data:image/jpeg;base64,") and urls[1] is None
    import base64
    import io

    from PIL import Image

    picture = Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1])))
    assert max(picture.size) == 32


# -- the command line ---------------------------------------------------------------------------------------------
def test_cli_classes_table_and_json(scanned):
    from tests.cli.test_cli import run

    stats, root, cache = scanned
    common = ("--data-dir", str(root), "--split", "test")
    as_json = run("classes", "--layer", "conv2d_3", *common, "--json", cache=cache)
    assert as_json.returncode == 0, as_json.stderr
    assert "scanning" not in as_json.stderr, "classes reads the cached scan"
    result = json.loads(as_json.stdout)
    table = classes.layer_separation(stats, "conv2d_3")
    assert result["positive"] == "dogs" and result["images"] == {"cats": 3, "dogs": 3}
    assert [row["channel"] for row in result["channels"]] == [row.channel + 1 for row in table.ranked()]
    assert len(result["channels"]) == 128
    by_number = run("classes", "--layer", "7", *common, "--json", cache=cache)
    assert json.loads(by_number.stdout) == result, "layer 7 is conv2d_3"

    text = run("classes", "--layer", "dense", "--top", "5", *common, cache=cache)
    assert text.returncode == 0, text.stderr
    rows = [line.split() for line in text.stdout.splitlines() if line[:4].strip().isdigit() and " of " not in line]
    best = classes.layer_separation(stats, "dense").ranked(5)
    assert [int(r[1]) for r in rows] == [row.channel + 1 for row in best]
    assert [float(r[2]) for r in rows] == [round(row.auc, 3) for row in best]

    flatten = run("classes", "--layer", "flatten", *common, cache=cache)
    assert flatten.returncode == 1 and "too many to keep" in flatten.stderr
    far = run("classes", "--layer", "13", *common, cache=cache)
    assert far.returncode == 1 and "numbered 1 to 12" in far.stderr


def test_cli_info_reports_liveness_for_images_and_a_scanned_split(model, scanned):
    from tests.cli.test_cli import run

    stats, root, cache = scanned
    split = run("info", "--data-dir", str(root), "--split", "test", cache=cache)
    assert split.returncode == 0, split.stderr
    assert "Liveness on the 6 photos of the test split" in split.stdout
    health = classes.network_health(stats)
    lines = {line.split()[1]: line for line in split.stdout.splitlines() if "/" in line and line[:2].strip().isdigit()}
    for name, live in health.items():
        assert f"{live.never_active}/{live.channels}" in lines[name]
    photos = run("info", *(str(p) for p in stats.paths[:2]))
    assert photos.returncode == 0, photos.stderr
    assert "Liveness on 2 images" in photos.stdout
    counted = liveness_of([model.activations(stats.paths[:2])])
    conv = next(line for line in photos.stdout.splitlines() if line.split()[1:2] == ["conv2d"] and "/" in line)
    assert f"{counted['conv2d'].never_active}/32" in conv
    plain = run("info")
    assert "Liveness" not in plain.stdout
