"""What the DeepYeast layers encode (paper Figure 3): t-SNE of the cells at every layer
(:mod:`.tsne`), what single neurons encode (:mod:`.neurons`), the input patches that most
activate chosen neurons (:mod:`.patches`) and Figure S4's comparison with Gabor filters
(:mod:`.gabor`), run together by :func:`run_interpretation`.

Inputs
------
* Network features (:mod:`deepyeast.analysis.features`): ``DIR/paths.txt`` and per blob either
  ``DIR/<blob>.pool.npy`` with ``DIR/<blob>.top.npz`` (predict's default) or the whole ``DIR/<blob>.npy``
  (needed only for ``tsne_reduce="full"``).
* Cell labels: the archive's split lists or any CSV with ``path,label`` (e.g. a predictions table).
* CellProfiler features: CSV ``path,<feature_1>,...``, one row per cell (optional).
* Cell images for the patches: the PNGs under the archive root, or a Datum LMDB (optional).
* The trained weights (``.caffemodel``, optional): the first convolution layer's filters for Figure S4.
* Whole maps of the t-SNE cells (optional, the paper's t-SNE input): a second feature folder written by
  ``predict.py --features-reduce full`` for a sample of the cells (``--sample 1000``); its cells are the
  t-SNE's, each layer embedded from its full flattened activations.

Receptive fields come from the engine (:meth:`deepyeast.engine.Net.geometry` of the deploy
prototxt): conv1 3 x 3 input pixels, conv2 5, conv3 10, conv4 14, conv5 .. conv8 24, 32, 40, 48.
"""

import dataclasses
import os
import warnings

import numpy as np

from deepyeast.analysis.features import (PATHS_FILE, blob_mean_max, feature_file, has_blob, labels_for_paths,
                                         layer_features, load_blob, match_paths, network_blobs, network_geometry,
                                         read_cellprofiler_csv, read_paths, read_top)
from deepyeast.analysis.interpret.neurons import (class_entropy, mutual_information_per_neuron,
                                                  plot_neuron_summary, strongest_correlations)
from deepyeast.analysis.interpret.patches import (PATCH_LAYERS, load_cell_images, patches_of_units, plot_patches,
                                                  stored_top_units, top_activating_units)
from deepyeast.analysis.interpret.gabor import compare_filters, gabor_bank, gabor_columns, plot_gabor_figure
from deepyeast.analysis.interpret.tsne import plot_tsne_grid, tsne_embedding
from deepyeast.utils.manifest import Result, clear_result, figure, missing_part, table, write_result
from deepyeast.utils.io import InputError, atomic_write_json, write_csv
from deepyeast.utils.parallel import process_pool, worker_count
from deepyeast.utils.progress import progress
from deepyeast.utils.run_context import RunContext


@dataclasses.dataclass(frozen=True)
class InterpretInputs:
    """What the Figure 3 analyses read.  ``feature_dir``: the network features of the cells;
    ``labels``: dict path -> (split, label) (``read_label_lists`` / ``read_label_table``);
    ``class_names``: the class table; ``blobs``: blob names to analyse (default: every one of
    :func:`~deepyeast.analysis.features.network_blobs` present); ``cp_csv``: CellProfiler features
    of the same cells (optional); images for the patches from ``archive_root`` or ``lmdb_path``
    (without either, patches are skipped); ``model``: the deploy prototxt whose blobs the features
    are (default: DeepYeast's, from the model zoo); ``weights``: the trained ``.caffemodel``: its
    first convolution layer's filters are fitted by Gabor filters (Figure S4, :mod:`.gabor`:
    ``gabor.{png,pdf}``, ``gabor_filters.csv``; with CellProfiler Gabor texture features among
    ``cp_csv``'s, each layer's neurons are correlated with them too); ``tsne_features``: a feature
    folder holding the whole maps (``<blob>.npy``) of some of the cells: they are the t-SNE's cells
    (instead of ``n_tsne`` random ones), each layer embedded from its full flattened activations
    (the paper's input)."""

    feature_dir: str
    labels: dict
    class_names: tuple
    blobs: tuple = None
    cp_csv: str = None
    archive_root: str = None
    lmdb_path: str = None
    model: str = None
    weights: str = None
    tsne_features: str = None


@dataclasses.dataclass(frozen=True)
class InterpretSettings:
    """The Figure 3 analyses' settings: t-SNE of ``n_tsne`` random cells (``tsne`` "fast" or
    "paper", :func:`~deepyeast.analysis.interpret.tsne.tsne_embedding`; conv blobs pooled or
    ``tsne_reduce="full"``), mutual information on ``n_bins`` quantile bins of each neuron's
    ``summary`` ("max" or "mean" over space), the patch figure's layers, ``n_patches`` per neuron
    and neurons (``neurons``: optional dict layer -> list of channels; default the ``n_neurons``
    channels of highest mutual information)."""

    n_tsne: int = 1000
    n_bins: int = 10
    patch_layers: tuple = PATCH_LAYERS
    neurons: dict = None
    n_neurons: int = 4
    n_patches: int = 8
    summary: str = "max"
    tsne_reduce: str = "pool"
    tsne: str = "fast"


def run_interpretation(inputs, out_dir, settings=InterpretSettings(), context=RunContext()):
    """Write the Figure 3 analyses for the cells of ``inputs`` (:class:`InterpretInputs`) to
    ``out_dir``, with ``settings`` (:class:`InterpretSettings`); ``context``: the seed, the log, the
    command recorded.

    Outputs: ``tsne.{png,pdf}`` and ``tsne.csv`` (Figure 3B),
    ``patches.{png,pdf}`` (3A), ``neurons_<blob>.csv`` and
    ``neurons.{png,pdf}`` (3D: with CellProfiler features, also the box of their mutual
    information with the class, on the same quantile bins as the neurons', and
    ``cellprofiler_mi.csv``), ``interpret.json``; with ``inputs.weights`` Figure S4's files.  Returns the
    summary dict.
    """
    log, seed, command = context.say, context.seed, context.command
    feature_dir, labels, class_names, blobs = inputs.feature_dir, inputs.labels, inputs.class_names, inputs.blobs
    cp_csv, archive_root, lmdb_path, model = inputs.cp_csv, inputs.archive_root, inputs.lmdb_path, inputs.model
    weights, tsne_features = inputs.weights, inputs.tsne_features
    n_tsne, n_bins, patch_layers, neurons = settings.n_tsne, settings.n_bins, settings.patch_layers, settings.neurons
    n_neurons, n_patches, summary = settings.n_neurons, settings.n_patches, settings.summary
    tsne_reduce, tsne = settings.tsne_reduce, settings.tsne
    paths = read_paths(os.path.join(feature_dir, PATHS_FILE))
    _splits, y = labels_for_paths(paths, labels, os.path.join(feature_dir, PATHS_FILE))
    if blobs is None:
        blobs = [b for b in network_blobs(model) if has_blob(feature_dir, b)]
    if not blobs:
        raise InputError(f"{feature_dir}: no feature files for blobs {', '.join(network_blobs(model))}")
    geometry = network_geometry(model)
    cp = None
    if cp_csv is not None:
        from deepyeast.analysis.cp_features import describe_features

        cp_paths, cp_names, cp_values = read_cellprofiler_csv(cp_csv)
        cp = (cp_names, cp_values[match_paths(paths, cp_paths, f"{cp_csv} (for {feature_dir}/paths.txt)")])
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    tsne_rows = np.sort(rng.choice(len(paths), size=min(n_tsne, len(paths)), replace=False))
    if tsne_features is not None:  # the cells whose whole maps were extracted are the t-SNE's
        tsne_paths = read_paths(os.path.join(tsne_features, PATHS_FILE))
        tsne_rows = match_paths(tsne_paths, paths, f"{tsne_features}/{PATHS_FILE} (in {feature_dir}/{PATHS_FILE})")
        tsne_reduce = "full"
    gabor_cols = gabor_columns(cp[0]) if cp is not None else []
    h_class = class_entropy(y)
    summary_out = dict(feature_dir=feature_dir, n_cells=len(paths), blobs=list(blobs), seed=seed,
                       n_bins=n_bins, neuron_summary=summary, class_entropy_nats=h_class,
                       tsne_cells=int(len(tsne_rows)), tsne_reduce=tsne_reduce, tsne=tsne, layers={},
                       tsne_features=None if tsne_features is None else os.fspath(tsne_features))
    embeddings, mi_by_blob, r_by_blob, chance_by_blob = {}, {}, {}, {}
    clear_result(out_dir)
    # t-SNE maps (one single-threaded embedding per layer) in worker processes while this one does the rest;
    # the whole-map inputs of TSNE=paper (up to ~1 GB per layer) stay here
    workers = worker_count(context.jobs, len(blobs)) if tsne_features is None and tsne_reduce == "pool" else 1
    with process_pool(workers) as pool:
        for blob in progress(blobs, desc="interpret", unit="layer"):
            # per-channel mean and max of every cell: the pooled file, or one chunked pass over the whole maps
            whole = os.path.exists(os.path.join(feature_dir, feature_file(blob)))
            g = geometry.get(blob)
            spatial = (g.height * g.width > 1) if g else not whole or load_blob(feature_dir, blob).shape[2] > 1
            means, maxima = blob_mean_max(feature_dir, blob, g)
            outputs = maxima if summary == "max" else means
            mi = mutual_information_per_neuron(outputs, y, n_bins)
            mi_by_blob[blob] = mi
            rows = [dict(neuron=m, mutual_information=mi[m], mi_fraction=mi[m] / h_class if h_class else 0.0)
                    for m in range(len(mi))]
            if cp is not None:
                best, r = strongest_correlations(outputs, cp[1])
                r_by_blob[blob] = r
                for m, row in enumerate(rows):
                    row.update(best_cellprofiler_feature=cp[0][best[m]], pearson_r=r[m])
            write_csv(os.path.join(out_dir, f"neurons_{blob}.csv"), rows)
            chance = mutual_information_per_neuron(outputs, rng.permutation(y), n_bins)
            chance_by_blob[blob] = float(np.median(chance))
            layer = dict(n_neurons=len(mi), mi_median=float(np.median(mi)), mi_max=float(mi.max()),
                         mi_shuffled_median=chance_by_blob[blob],
                         top_neurons=[int(i) for i in np.argsort(-mi)[:n_neurons]])
            if cp is not None:
                layer["abs_r_median"] = float(np.median(np.abs(r_by_blob[blob])))
            if gabor_cols:  # Figure S4: the strongest correlation to a Gabor texture feature
                _, r_gabor = strongest_correlations(outputs, cp[1][:, gabor_cols])
                layer["abs_r_gabor_median"] = float(np.median(np.abs(r_gabor)))
            summary_out["layers"][blob] = layer
            log(f"[interpret] {blob}: {len(mi)} neurons, median MI {layer['mi_median']:.3f} nats")
            if tsne_features is not None:  # every neuron's output of the sampled cells, flattened
                tsne_x = layer_features(load_blob(tsne_features, blob, g), "full")
            elif tsne_reduce == "pool":  # layer_features' pooling, from the summaries already taken
                tsne_x = np.concatenate([means, maxima], 1)[tsne_rows] if spatial else means[tsne_rows]
            else:
                tsne_x = layer_features(load_blob(feature_dir, blob, g), tsne_reduce, tsne_rows)
            layer["tsne_input_dims"] = int(tsne_x.shape[1])
            embeddings[blob] = (tsne_embedding(tsne_x, seed, mode=tsne) if pool is None
                                else pool.submit(tsne_embedding, tsne_x, seed, mode=tsne))
        cp_mi = None
        if cp is not None:  # Figure 3D's CellProfiler box: the same binning as the neurons'
            finite = np.where(np.isfinite(cp[1]), cp[1], np.nan)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing feature: its median is NaN, then 0
                median = np.nan_to_num(np.nanmedian(finite, axis=0))
            finite = np.where(np.isnan(finite), median[None, :], finite)  # a missing value: its feature's median
            cp_mi = mutual_information_per_neuron(finite, y, n_bins)
            cp_chance = float(np.median(mutual_information_per_neuron(finite, rng.permutation(y), n_bins)))
            write_csv(os.path.join(out_dir, "cellprofiler_mi.csv"),
                      [dict(feature=n, mutual_information=cp_mi[j], mi_fraction=cp_mi[j] / h_class if h_class else 0.0)
                       for j, n in enumerate(cp[0])])
            summary_out["cellprofiler"] = dict(n_features=len(cp[0]), mi_median=float(np.median(cp_mi)),
                                               mi_max=float(cp_mi.max()), mi_shuffled_median=cp_chance,
                                               features=describe_features(cp[0]))
        plot_neuron_summary(mi_by_blob, r_by_blob, h_class, os.path.join(out_dir, "neurons"), chance_by_blob,
                            cp_mi=cp_mi, cp_chance=summary_out.get("cellprofiler", {}).get("mi_shuffled_median"))
        if weights is not None:
            summary_out["gabor"] = gabor_comparison(weights, summary_out["layers"], out_dir, seed,
                                                    [cp[0][j] for j in gabor_cols])
        if archive_root is not None or lmdb_path is not None:
            layers = [b for b in patch_layers if b in blobs]
            chosen_units = []  # (blob, channel, top units): from the whole maps, else the stored top cells
            for blob in layers:
                whole = os.path.exists(os.path.join(feature_dir, feature_file(blob)))
                act = load_blob(feature_dir, blob, geometry.get(blob)) if whole else None
                top = None if whole else read_top(feature_dir, blob, geometry.get(blob))
                n_channels = act.shape[1] if whole else top["value"].shape[0]
                chosen = (neurons or {}).get(blob) or summary_out["layers"][blob]["top_neurons"]
                if blob == "fc3" and not (neurons or {}).get(blob):
                    chosen = list(range(n_channels))  # every class score of the trained net
                for channel in chosen:
                    if not 0 <= channel < n_channels:
                        raise InputError(f"neuron {channel} of {blob}: blob has {n_channels} neurons")
                    units = (top_activating_units(act, channel, n_patches) if whole
                             else stored_top_units(top, channel, n_patches, len(paths)))
                    chosen_units.append((blob, channel, units))
            # the crops of the cells shown only, not of every cell
            shown = sorted({u[0] for _, _, units in chosen_units for u in units})
            images = dict(zip(shown, load_cell_images([paths[i] for i in shown], archive_root, lmdb_path))) \
                if shown else {}
            panels = [(blob, channel, patches_of_units(units, geometry[blob], images))
                      for blob, channel, units in chosen_units]
            summary_out["patches"] = [dict(blob=b, neuron=c, cells=[paths[p["cell"]] for p in ps],
                                           positions=[[p["row"], p["col"]] for p in ps],
                                           values=[p["value"] for p in ps]) for b, c, ps in panels]
            plot_patches(panels, os.path.join(out_dir, "patches"))
        # the t-SNE maps ran in the workers meanwhile (or here, in order, without workers)
        embeddings = {b: e.result() if pool is not None else e for b, e in embeddings.items()}
        tsne_table = [dict(path=paths[i], label=int(y[i]), **{f"{b}_{a}": embeddings[b][j, a_i]
                           for b in blobs for a_i, a in enumerate("xy")}) for j, i in enumerate(tsne_rows)]
        write_csv(os.path.join(out_dir, "tsne.csv"), tsne_table)
        plot_tsne_grid(embeddings, y[tsne_rows], class_names, os.path.join(out_dir, "tsne"))
    atomic_write_json(os.path.join(out_dir, "interpret.json"), summary_out, indent=2)
    write_interpret_result(out_dir, summary_out, command=command)  # last: marks a finished step
    return summary_out


def gabor_comparison(weights, layers, out_dir, seed=0, gabor_features=()):
    """Figure S4 (our reading, :mod:`.gabor`): the first convolution layer's filters of ``weights``
    (a ``.caffemodel``) fitted by Gabor filters beside random filters, and ``layers``' medians of the
    neurons' strongest |r| to the CellProfiler Gabor texture features (``gabor_features``: their names).

    Writes ``gabor.{png,pdf}`` and ``gabor_filters.csv`` (per filter: R^2 and per input channel the
    |cosine| and the fitted Gabor's parameters) into ``out_dir``; returns the summary dict.
    """
    from deepyeast.caffe.blobs import read_caffemodel

    params = read_caffemodel(weights)
    layer = next((name for name, blobs in params.items() if blobs[0].ndim == 4), None)
    if layer is None:
        raise InputError(f"{weights}: no convolution layer (4-D weights) to compare with Gabor filters")
    w = params[layer][0]
    result, fit, random_r2, bank = compare_filters(w, seed=seed)
    _, bank_params = gabor_bank(w.shape[2])
    rows = []
    for f in range(w.shape[0]):
        row = dict(filter=f, r2=fit["r2"][f])
        for c in range(w.shape[1]):
            p = bank_params[fit["index"][f, c]]
            row.update({f"ch{c}_r": fit["r"][f, c], f"ch{c}_wavelength": p["wavelength"],
                        f"ch{c}_sigma": p["sigma"], f"ch{c}_aspect": p["aspect"],
                        f"ch{c}_angle_deg": np.degrees(p["angle"]), f"ch{c}_phase_deg": np.degrees(p["phase"])})
        rows.append(row)
    write_csv(os.path.join(out_dir, "gabor_filters.csv"), rows)
    layer_r = {b: (v["abs_r_gabor_median"], v["abs_r_median"]) for b, v in layers.items() if "abs_r_gabor_median" in v}
    plot_gabor_figure(w, fit, random_r2, bank, layer_r, os.path.join(out_dir, "gabor"))
    result.update(layer=layer, weights=os.fspath(weights), gabor_features=list(gabor_features))
    return result


def tsne_input_note(tsne_reduce):
    """What the t-SNE of each layer was run on, in words (the paper: the neuron outputs themselves)."""
    if tsne_reduce == "full":
        return ", on each layer's full activations (every neuron's output), as the paper."
    return (", on each convolution layer's maps pooled to every channel's spatial mean and maximum (2 values per "
            "channel) and on the fully connected layers' outputs as they are; the paper ran it on the full neuron "
            "outputs (make reproduce does: --tsne-features with the whole maps of the t-SNE cells, predict.py "
            "--sample N --features-reduce full, 4 MiB per cell).")


def write_interpret_result(out_dir, summary, command=None):
    """The result manifest of the interpretation (see :mod:`deepyeast.utils.manifest`)."""
    layers = summary["layers"]
    has_r = any("abs_r_median" in v for v in layers.values())
    has_gabor_r = any("abs_r_gabor_median" in v for v in layers.values())
    columns = ["layer", "neurons", "median MI (nats)", "median MI, labels shuffled"]
    if has_r:
        columns.append("median |r| to CellProfiler")
    if has_gabor_r:
        columns.append("median |r| to Gabor texture")
    rows = []
    for blob, v in layers.items():
        row = [blob, v["n_neurons"], f"{v['mi_median']:.3f}", f"{v['mi_shuffled_median']:.3f}"]
        if has_r:
            row.append(f"{v['abs_r_median']:.2f}" if "abs_r_median" in v else "—")
        if has_gabor_r:
            row.append(f"{v['abs_r_gabor_median']:.2f}" if "abs_r_gabor_median" in v else "—")
        rows.append(row)
    cp = summary.get("cellprofiler")
    if cp:
        row = ["CellProfiler features", cp["n_features"], f"{cp['mi_median']:.3f}", f"{cp['mi_shuffled_median']:.3f}"]
        row += ["—"] * (has_r + has_gabor_r)
        rows.append(row)
    text = (f"Features of {summary['n_cells']:,} cells at {len(layers)} layers. A neuron's output per cell (spatial "
            f"{summary['neuron_summary']} of its map for a convolution channel) is compared with the cell's "
            f"compartment by mutual information on {summary['n_bins']} quantile bins; the class entropy, the most "
            f"any neuron can reach, is {summary['class_entropy_nats']:.2f} nats.")
    if cp:
        text += (f" The CellProfiler box of Figure 3D bins each of {cp['n_features']} features the same way "
                 f"({cp['features']['text']})")
    text += f" t-SNE: {summary.get('tsne', 'fast')} settings" + (
        " (scikit-learn's defaults, as the paper)" if summary.get("tsne") == "paper" else
        " (standardised features, 50 principal components, 500 iterations: faster than the paper's scikit-learn "
        "defaults, --tsne paper)") + tsne_input_note(summary.get("tsne_reduce", "pool"))
    figures = [figure("tsne.png", f"Figure 3B: t-SNE of {summary['tsne_cells']:,} cells at each layer, coloured by "
                                  "compartment."),
               figure("neurons.png", "Figure 3D: per layer, the distribution of neurons' mutual information with the "
                                     "compartment (grey x: median with shuffled labels)" +
                      (", the same for the CellProfiler features (last box)," if cp else "") +
                      (" and of each neuron's strongest correlation to a CellProfiler feature." if has_r else "."))]
    gabor = summary.get("gabor")
    metrics, tables = {}, []
    if gabor:
        text += (f" Figure S4, in our reading (the paper gives no procedure): each of {gabor['layer']}'s "
                 f"{gabor['n_filters']} filters ({gabor['in_channels']} x {gabor['kernel']} x {gabor['kernel']}) is "
                 f"fitted per input channel by the best of {gabor['bank_size']:,} Gabor filters; a filter's fit R² is "
                 f"the fraction of its squared weights the fitted Gabors explain. Median R² "
                 f"{gabor['r2_median']:.2f} trained against {gabor['r2_median_random']:.2f} for "
                 f"{gabor['n_random']:,} random filters of the untrained net's distribution; "
                 f"{gabor['fraction_above_random_p95']:.0%} of the trained filters fit better than 95% of the random "
                 "ones.")
        if has_gabor_r:
            text += (" Each neuron is also correlated with CellProfiler's Gabor texture features ("
                     + ", ".join(gabor["gabor_features"]) + "), beside its strongest correlation to any feature.")
        metrics = {"first_layer_gabor_r2_median": gabor["r2_median"],
                   "first_layer_gabor_r2_median_random": gabor["r2_median_random"],
                   "first_layer_gabor_above_random_p95": gabor["fraction_above_random_p95"]}
        tables.append(table("Figure S4: the first layer's filters against Gabor filters",
                            ["quantity", "paper", "ours"],
                            [[f"median Gabor fit R², {gabor['layer']} ({gabor['n_filters']} filters)", "—",
                              f"{gabor['r2_median']:.3f}"],
                             [f"median Gabor fit R², random filters ({gabor['n_random']:,})", "—",
                              f"{gabor['r2_median_random']:.3f}"],
                             ["filters fitting better than 95% of random ones", "—",
                              f"{gabor['fraction_above_random_p95']:.3f}"]],
                            "The paper shows the comparison as a figure without numbers (its paper column is empty); "
                            "per filter: gabor_filters.csv.", file="gabor_filters.csv"))
        figures.append(figure("gabor.png", f"Figure S4 (our reading): left, the {gabor['layer']} filters of largest "
                                           "weight norm, each input channel's kernel (m: marker, p: protein; w) beside "
                                           "its fitted Gabor filter (G), one colour scale per filter; middle, the Gabor "
                                           "fit R² of the trained filters and of random ones (chance level); right, per "
                                           "layer, the median over neurons of the strongest |Pearson r| to a "
                                           "CellProfiler Gabor texture feature and to any CellProfiler feature."))
    if os.path.exists(os.path.join(out_dir, "patches.png")):
        figures.insert(1, figure("patches.png", "Figure 3A: input patches (each unit's receptive field) that most "
                                                "activate chosen neurons; red: marker, green: protein."))
    missing = [] if "patches" in summary else [missing_part(
        "input patches that most activate neurons (Figure 3A)", "no cell images were given",
        "--archive ROOT or --lmdb DIR")]
    if not has_r:
        missing.append(missing_part("correlation of neurons to CellProfiler features and their mutual information "
                                    "with the class (Figure 3D)", "no CellProfiler features were given",
                                    "--cellprofiler CSV"))
    if not gabor:
        missing.append(missing_part("Figure S4: the first layer's filters against Gabor filters",
                                    "no trained weights were given", "--weights W.caffemodel"))
    return write_result(out_dir, Result("interpret", "What the layers encode (paper Figure 3, Figure S4)", text,
                        figures=figures, metrics=metrics,
                        tables=[table("Neurons per layer", columns, rows,
                                      "Mutual information between a neuron's binned output and the compartment, "
                                      "median over the layer's neurons, in nats; per neuron in neurons_<layer>.csv.")]
                        + tables,
                        missing=missing, details={k: v for k, v in summary.items() if k != "patches"},
                        seeds={"seed": summary["seed"]}, command=command, order=50))



