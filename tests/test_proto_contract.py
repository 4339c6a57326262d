"""Our caffe.proto subset against the real Caffe 1.0 descriptor (Debian bullseye's pycaffe).

Every message, field and enum value we declare must exist in real Caffe with
the same field number, label, type, referenced type and default, because the
wire and text formats are the contract with real Caffe.
"""

import json
import math
import os

import pytest

from deepyeast.caffe import caffe_pb2, root as caffe_root

pytestmark = pytest.mark.caffe

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def real_descriptor(tmp_path_factory, caffe_root_present):
    out = tmp_path_factory.mktemp("descriptor") / "caffe_descriptor.json"
    caffe_root.run_pycaffe(os.path.join(HERE, "pycaffe", "dump_descriptor.py"), [str(out)])
    with open(out) as f:
        return json.load(f)


def _our_messages():
    def walk(descs):
        for d in descs:
            yield d
            yield from walk(d.nested_types)
    return list(walk(caffe_pb2.DESCRIPTOR.message_types_by_name.values()))


def _our_enums():
    enums = list(caffe_pb2.DESCRIPTOR.enum_types_by_name.values())
    for msg in _our_messages():
        enums.extend(msg.enum_types)
    return enums


def _label(field):
    """descriptor.proto's label number: 1 optional, 2 required, 3 repeated (newer protobuf drops ``.label``)."""
    if field.is_repeated:
        return 3
    return 2 if field.is_required else 1


def _same_default(ours, real):
    if isinstance(ours, float) or isinstance(real, float):
        # Defaults of float fields are parsed as doubles from the .proto text.
        return math.isclose(float(ours), float(real), rel_tol=1e-7, abs_tol=0.0)
    if isinstance(ours, bytes):
        ours = ours.decode("latin-1")
    return ours == real


def test_every_message_and_field_matches_real_caffe(real_descriptor):
    real = real_descriptor["messages"]
    problems = []
    n_fields = 0
    for msg in _our_messages():
        if msg.full_name not in real:
            problems.append(f"message {msg.full_name}: not in real Caffe")
            continue
        real_fields = real[msg.full_name]
        for f in msg.fields:
            n_fields += 1
            where = f"{msg.full_name}.{f.name}"
            r = real_fields.get(f.name)
            if r is None:
                problems.append(f"{where}: no such field in real Caffe")
                continue
            for key, ours in (("number", f.number), ("label", _label(f)), ("type", f.type)):
                if ours != r[key]:
                    problems.append(f"{where}: {key} {ours} here, {r[key]} in real Caffe")
            ref = f.message_type or f.enum_type
            if (ref.full_name if ref else "") != r["type_name"]:
                problems.append(f"{where}: refers to {ref.full_name if ref else None}, real Caffe to {r['type_name']}")
            if bool(f.has_default_value) != r["has_default"]:
                problems.append(f"{where}: explicit default {f.has_default_value} here, {r['has_default']} in real Caffe")
            elif f.has_default_value and not _same_default(f.default_value, r["default"]):
                problems.append(f"{where}: default {f.default_value!r} here, {r['default']!r} in real Caffe")
            ours_packed = f.GetOptions().packed if f.GetOptions().HasField("packed") else None
            if ours_packed != r["packed"]:
                problems.append(f"{where}: packed={ours_packed} here, {r['packed']} in real Caffe")
    assert n_fields > 200, "the subset should cover the messages the project uses"
    assert not problems, "caffe.proto disagrees with real Caffe:\n" + "\n".join(problems)


def test_every_enum_value_matches_real_caffe(real_descriptor):
    real = real_descriptor["enums"]
    problems = []
    for enum in _our_enums():
        if enum.full_name not in real:
            problems.append(f"enum {enum.full_name}: not in real Caffe")
            continue
        for v in enum.values:
            if real[enum.full_name].get(v.name) != v.number:
                problems.append(f"{enum.full_name}.{v.name} = {v.number} here, "
                                f"{real[enum.full_name].get(v.name)} in real Caffe")
    assert not problems, "caffe.proto enums disagree with real Caffe:\n" + "\n".join(problems)


def test_descriptor_dump_sees_known_fields(real_descriptor):
    """Guard against a dump that silently lost everything: spot facts of Caffe 1.0."""
    layer = real_descriptor["messages"]["caffe.LayerParameter"]
    assert layer["batch_norm_param"]["number"] == 139
    assert layer["scale_param"]["number"] == 142
    assert real_descriptor["messages"]["caffe.NetParameter"]["layer"]["number"] == 100
    assert real_descriptor["messages"]["caffe.Datum"]["data"]["number"] == 4
