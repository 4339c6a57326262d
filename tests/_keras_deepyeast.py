"""The authors' Keras DeepYeast rebuilt with real Keras 3 (PyTorch backend) for the converter's tests.

The architecture follows the published model definition of github.com/tanelp/deepyeast
(layer names conv1_1 ... conv3_4, bn1_1 ... bn5, ip1 ... ip3; 64 x 64 x 2 input; Keras
defaults otherwise).  Weights are random but not trivial: kernels and biases drawn at
He scale, and every BatchNormalization's moving statistics set from the activations the
layer actually receives on the crops (then perturbed), so activations stay in range and
the softmax spreads over several classes; gamma and beta are drawn too.

Files are written in the legacy Keras HDF5 layouts:

* :func:`save_keras3_model` -- ``model.save("x.h5")`` by Keras 3 itself (whole model);
* :func:`save_keras2_weights` -- the layout Keras 2 (h5py 2) wrote with ``save_weights``
  / ``ModelCheckpoint``: fixed-length byte-string attributes, weight names with a
  ``:0`` suffix, optionally wrapped as a whole model with ``model_weights`` and an
  ``optimizer_weights`` group, and ``backend`` "tensorflow" or "theano" (Theano files
  store flipped, i.e. true-convolution, kernels).
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

CONV_BLOCKS = (("conv1_1", 64, "bn1_1"), ("conv1_2", 64, "bn1_2"), "pool1",
               ("conv2_1", 128, "bn2_1"), ("conv2_2", 128, "bn2_2"), "pool2",
               ("conv3_1", 256, "bn3_1"), ("conv3_2", 256, "bn3_2"), ("conv3_3", 256, "bn3_3"),
               ("conv3_4", 256, "bn3_4"), "pool3")


def build_model():
    """A fresh (untrained) Keras DeepYeast: input 64 x 64 x 2, softmax over 12 classes."""
    import keras
    from keras import layers

    inp = keras.Input(shape=(64, 64, 2))
    x = inp
    for i, block in enumerate(CONV_BLOCKS):
        if isinstance(block, str):
            x = layers.MaxPooling2D((2, 2), strides=(2, 2), name=block)(x)
            continue
        name, filters, bn = block
        x = layers.Conv2D(filters, (3, 3), padding="same", name=name)(x)
        x = layers.BatchNormalization(name=bn)(x)
        x = layers.Activation("relu", name="relu" + name[4:])(x)
    x = layers.Flatten(name="flatten")(x)
    for ip, bn, relu in (("ip1", "bn4", "relu4"), ("ip2", "bn5", "relu5")):
        x = layers.Dense(512, name=ip)(x)
        x = layers.BatchNormalization(name=bn)(x)
        x = layers.Activation("relu", name=relu)(x)
        x = layers.Dropout(0.5)(x)
    x = layers.Dense(12, name="ip3")(x)
    x = layers.Activation("softmax", name="predictions")(x)
    return keras.Model(inp, x, name="deepyeast-original")


def keras_input(crops):
    """The authors' preprocess_input on our uint8 N x 2 x 64 x 64 crops: channels last, x / 255 - 0.5, * 2."""
    x = np.asarray(crops).transpose(0, 2, 3, 1).astype(np.float32)
    x /= 255.0
    x -= 0.5
    x *= 2.0
    return x


def predict(model, crops):
    """Keras' probabilities (float32 N x 12) for uint8 crops, inference mode."""
    import keras
    return np.asarray(keras.ops.convert_to_numpy(model(keras_input(crops), training=False)), np.float32)


def randomize(model, crops, seed=0):
    """Give ``model`` random non-trivial weights and BatchNorm statistics calibrated on ``crops``."""
    import keras
    from keras import layers

    rng = np.random.default_rng(seed)
    x = keras_input(crops)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, layers.BatchNormalization):
            seen = keras.Model(model.inputs, layer.input)
            a = np.asarray(keras.ops.convert_to_numpy(seen(x, training=False)))
            a = a.reshape(-1, a.shape[-1])
            mu, var = a.mean(axis=0), a.var(axis=0) + 1e-4
            n = mu.shape[0]
            weights = [rng.uniform(0.6, 1.4, n), rng.normal(0, 0.2, n),
                       mu + 0.2 * rng.normal(0, 1, n) * np.sqrt(var), var * rng.uniform(0.5, 2.0, n)]
        else:
            kernel, bias = weights
            fan_in = int(np.prod(kernel.shape[:-1]))
            weights = [rng.normal(0, np.sqrt(2.0 / fan_in), kernel.shape), rng.normal(0, 0.1, bias.shape)]
        layer.set_weights([np.asarray(w, np.float32) for w in weights])
    return model


def save_keras3_model(model, path):
    """Keras 3's own legacy whole-model HDF5 (``model.save`` with an .h5 name)."""
    model.save(path)
    return path


def _bytes_array(strings):
    return np.array([s.encode("utf-8") for s in strings], dtype=f"S{max([len(s) for s in strings] + [1])}")


def save_keras2_weights(model, path, whole_model=False, backend="tensorflow", keras_version="2.1.2"):
    """Write ``model``'s weights in Keras 2's legacy HDF5 layout (see the module doc)."""
    import h5py
    from keras import layers

    with h5py.File(path, "w") as f:
        if whole_model:
            config = {"class_name": "Model", "config": {"name": model.name, "layers": [
                {"name": layer.name, "class_name": type(layer).__name__, "config": layer.get_config(),
                 "inbound_nodes": []} for layer in model.layers]}}
            f.attrs["model_config"] = json.dumps(config).encode("utf-8")
            f.attrs["training_config"] = json.dumps({"loss": "categorical_crossentropy"}).encode("utf-8")
            f.attrs["keras_version"] = keras_version.encode()
            f.attrs["backend"] = backend.encode()
            group = f.create_group("model_weights")
            opt = f.create_group("optimizer_weights")
            opt.attrs["weight_names"] = _bytes_array(["Adam/iterations:0"])
            opt.create_dataset("Adam/iterations:0", data=np.array(22 * 1016, np.int64))
        else:
            group = f
        group.attrs["keras_version"] = keras_version.encode()
        group.attrs["backend"] = backend.encode()
        group.attrs["layer_names"] = _bytes_array([layer.name for layer in model.layers])
        for layer in model.layers:
            g = group.create_group(layer.name)
            weights = layer.get_weights()
            if isinstance(layer, layers.BatchNormalization):
                roles = ["gamma", "beta", "moving_mean", "moving_variance"]
            elif weights:
                roles = ["kernel", "bias"]
            else:
                roles = []
            names = [f"{layer.name}/{role}:0" for role in roles]
            g.attrs["weight_names"] = _bytes_array(names) if names else np.array([], dtype="S1")
            for name, w in zip(names, weights):
                if backend == "theano" and name.endswith("kernel:0") and w.ndim == 4:
                    w = w[::-1, ::-1]  # Theano keeps true-convolution kernels
                g.create_dataset(name, data=np.asarray(w, np.float32))
    return path
