"""Caffe interoperability: our subset of ``caffe.proto``, Caffe's file formats, the real-Caffe root."""
