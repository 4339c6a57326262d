"""Dump the installed Caffe's protobuf descriptor as JSON (runs with the Caffe root's python3).

    python3 dump_descriptor.py OUT.json

OUT.json: {"messages": {full_name: {field: {number, label, type, type_name,
has_default, default}}}, "enums": {full_name: {value_name: number}}}.
Only the standard library and the real caffe.proto module are used.
"""
import json
import sys

from caffe.proto import caffe_pb2


def walk_messages(descriptors):
    for d in descriptors:
        yield d
        yield from walk_messages(d.nested_types)


def main(out_path):
    messages, enums = {}, {}
    tops = list(caffe_pb2.DESCRIPTOR.message_types_by_name.values())
    for enum in caffe_pb2.DESCRIPTOR.enum_types_by_name.values():
        enums[enum.full_name] = {v.name: v.number for v in enum.values}
    for msg in walk_messages(tops):
        fields = {}
        for f in msg.fields:
            default = f.default_value if f.has_default_value else None
            if isinstance(default, bytes):
                default = default.decode("latin-1")
            fields[f.name] = {
                "number": f.number, "label": f.label, "type": f.type,
                "type_name": (f.message_type or f.enum_type).full_name if (f.message_type or f.enum_type) else "",
                "has_default": bool(f.has_default_value), "default": default,
                "packed": bool(f.GetOptions().packed) if f.GetOptions().HasField("packed") else None,
            }
        messages[msg.full_name] = fields
        for enum in msg.enum_types:
            enums[enum.full_name] = {v.name: v.number for v in enum.values}
    with open(out_path, "w") as f:
        json.dump({"messages": messages, "enums": enums}, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
