#!/usr/bin/env python3
"""Convert Fashion-MNIST IDX files into .npy arrays for `compress`.

Only the Python standard library is used so that evaluation data can be
produced on machines (e.g. CI) that have neither numpy nor torch.  The sample
model generator imports this module so that training, evaluation and
calibration data all share exactly the same preprocessing.

Output (in --out DIR):
  images.npy   float32 [N,1,28,28], (pixel/255 - MEAN) / STD
  labels.npy   int64   [N]
With --per-file, images.npy is replaced by sample_00000.npy, ... each of
shape [1,28,28].
"""

import argparse
import array
import gzip
import os
import struct
import sys
import zlib

# Global Fashion-MNIST training-set statistics; every model is trained on and
# evaluated with inputs normalised with these values.
MEAN = 0.2860
STD = 0.3530

DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class IdxError(Exception):
    """Raised for a missing, truncated or malformed IDX file."""


def _read_gz(path):
    if not os.path.isfile(path):
        raise IdxError("%s: file not found" % path)
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise IdxError("%s: cannot decompress (%s)" % (path, e))


def read_idx_images(path):
    """Return (count, rows, cols, pixels) where pixels is a bytes object."""
    data = _read_gz(path)
    if len(data) < 16:
        raise IdxError("%s: too short for an IDX image header" % path)
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGE_MAGIC:
        raise IdxError("%s: bad magic 0x%08x (expected 0x%08x)"
                       % (path, magic, IMAGE_MAGIC))
    expected = 16 + count * rows * cols
    if len(data) != expected:
        raise IdxError("%s: size %d does not match header (%d images of %dx%d"
                       " need %d bytes)" % (path, len(data), count, rows, cols,
                                            expected))
    return count, rows, cols, data[16:]


def read_idx_labels(path):
    """Return the labels as a bytes object (one unsigned byte per sample)."""
    data = _read_gz(path)
    if len(data) < 8:
        raise IdxError("%s: too short for an IDX label header" % path)
    magic, count = struct.unpack(">II", data[:8])
    if magic != LABEL_MAGIC:
        raise IdxError("%s: bad magic 0x%08x (expected 0x%08x)"
                       % (path, magic, LABEL_MAGIC))
    if len(data) != 8 + count:
        raise IdxError("%s: size %d does not match header (%d labels)"
                       % (path, len(data), count))
    labels = data[8:]
    if labels and max(labels) > 9:
        raise IdxError("%s: label %d out of range 0..9" % (path, max(labels)))
    return labels


def normalise(pixels):
    """Map raw uint8 pixels to normalised float32 values (array('f')).

    A 256-entry lookup table keeps this fast in pure Python and guarantees
    that every consumer gets bit-identical float32 values.
    """
    table = [(p / 255.0 - MEAN) / STD for p in range(256)]
    return array.array("f", [table[p] for p in pixels])


def load_split(split, source=DEFAULT_SOURCE, offset=0, count=None):
    """Read a split and return (n, rows, cols, pixels_bytes, labels_bytes).

    The slice [offset, offset+count) is applied before normalisation so that
    small slices of the training set stay cheap.
    """
    img_name, lbl_name = SPLIT_FILES[split]
    n, rows, cols, pixels = read_idx_images(os.path.join(source, img_name))
    labels = read_idx_labels(os.path.join(source, lbl_name))
    if len(labels) != n:
        raise IdxError("%s split: %d images but %d labels"
                       % (split, n, len(labels)))
    if offset < 0 or offset > n:
        raise IdxError("offset %d outside 0..%d" % (offset, n))
    if count is None:
        count = n - offset
    if count < 0 or offset + count > n:
        raise IdxError("offset %d + count %d exceeds %d samples"
                       % (offset, count, n))
    size = rows * cols
    pixels = pixels[offset * size:(offset + count) * size]
    labels = labels[offset:offset + count]
    return count, rows, cols, pixels, labels


def _npy_header(descr, shape):
    """Build a .npy v1.0 header whose total length is a multiple of 64."""
    if len(shape) == 1:
        shape_str = "(%d,)" % shape[0]
    else:
        shape_str = "(" + ", ".join(str(d) for d in shape) + ")"
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (
        descr, shape_str)
    # magic(6) + version(2) + header_len(2) + header + '\n'
    prefix_len = 10
    pad = (-(prefix_len + len(header) + 1)) % 64
    header = header + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + \
        header.encode("latin1")


def _little_endian_bytes(arr):
    if sys.byteorder != "little":
        arr = array.array(arr.typecode, arr)
        arr.byteswap()
    return arr.tobytes()


def write_npy_float32(path, values, shape):
    """Write an array('f') as a C-ordered little-endian float32 .npy file."""
    with open(path, "wb") as f:
        f.write(_npy_header("<f4", shape))
        f.write(_little_endian_bytes(values))


def write_npy_int64(path, values):
    """Write a sequence of ints as a little-endian int64 .npy file [N]."""
    # list() matters: array() would reinterpret a bytes object as raw
    # memory instead of converting each byte to an int64.
    arr = array.array("q", list(values))
    with open(path, "wb") as f:
        f.write(_npy_header("<i8", (len(arr),)))
        f.write(_little_endian_bytes(arr))


def convert(out_dir, split="test", source=DEFAULT_SOURCE, offset=0,
            count=None, per_file=False):
    """Write images/labels for a slice of a split; returns the sample count."""
    n, rows, cols, pixels, labels = load_split(split, source, offset, count)
    values = normalise(pixels)
    os.makedirs(out_dir, exist_ok=True)
    if per_file:
        size = rows * cols
        width = max(5, len(str(max(n - 1, 0))))
        for i in range(n):
            name = "sample_%0*d.npy" % (width, i)
            write_npy_float32(os.path.join(out_dir, name),
                              values[i * size:(i + 1) * size], (1, rows, cols))
    else:
        write_npy_float32(os.path.join(out_dir, "images.npy"), values,
                          (n, 1, rows, cols))
    write_npy_int64(os.path.join(out_dir, "labels.npy"), labels)
    return n


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert Fashion-MNIST IDX .gz files to normalised .npy "
                    "arrays (float32 NCHW images, int64 labels).")
    parser.add_argument("--source", default=DEFAULT_SOURCE,
                        help="folder holding the IDX .gz files "
                             "(default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--offset", type=int, default=0,
                        help="index of the first sample (default 0)")
    parser.add_argument("--count", type=int, default=None,
                        help="number of samples (default: all after offset)")
    parser.add_argument("--per-file", action="store_true",
                        help="write one sample_NNNNN.npy [1,28,28] per image "
                             "instead of a single images.npy")
    args = parser.parse_args(argv)
    try:
        n = convert(args.out, args.split, args.source, args.offset,
                    args.count, args.per_file)
    except IdxError as e:
        print("fashion_mnist_to_npy: error: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("fashion_mnist_to_npy: error: %s" % e, file=sys.stderr)
        return 1
    print("wrote %d %s samples to %s" % (n, args.split, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
