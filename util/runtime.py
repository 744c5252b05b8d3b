"""One small interface for every model file: onnxruntime (default) or the ailia SDK.

What a model expects (input size, channel order, normalisation, layout) is data that
travels with the model, never literals in the calling code. It is read, in order, from
a JSON file beside the model (``NAME.json`` for ``NAME.onnx``), from the ONNX metadata
key ``model_spec`` (a JSON string), or from defaults the caller gives for a known
model family (e.g. the original FAN files, which carry no metadata).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .model_facts import ModelFacts, SpecError, kind_name, parse_facts

AILIA_LICENCE_PATH = "~/.shalo/AILIA.lic"


class ModelError(RuntimeError):
    """A model file that cannot be found, read or run; the message names the file."""


# A tensor shape as the model file declares it; None is a dimension it leaves open.
Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects and gives, kept as data next to the model."""

    kind: str = "generic"  # e.g. "fan2d", "depth", "blazeface"
    input_size: tuple[int, int] = (256, 256)  # (height, width)
    channel_order: str = "RGB"  # order of the first 3 input channels
    layout: str = "NCHW"  # or "NHWC"
    scale: float = 1.0 / 255.0  # pixel value * scale, then (x - mean) / std
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    # The facts of its kind, as stored; read only through util.model_facts.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {k: data[k] for k in ("kind", "channel_order", "layout", "scale") if k in data}
        for key in ("input_size", "mean", "std"):
            if key in data:
                known[key] = tuple(data[key])
        extra = {k: v for k, v in data.items() if k not in cls.__dataclass_fields__}
        extra.update(data.get("extra", {}))
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    def tensor_shape(self, channels: int = 3) -> Shape:
        """The declared shape of an image input with ``channels`` (batch left open)."""
        height, width = (int(v) for v in self.input_size)
        if self.layout == "NHWC":
            return (None, height, width, channels)
        return (None, channels, height, width)

    def to_tensor(self, image_rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB HxWx3 image of the model's input size -> float32 batch of one."""
        return self.to_batch([image_rgb])

    def to_batch(self, images_rgb: list[np.ndarray]) -> np.ndarray:
        """uint8 RGB HxWx3 images of the model's input size -> one float32 batch.

        Each image is scaled straight into its place in the batch, (x * scale - mean) /
        std as one multiply and one subtract: the step by step form made five full-size
        temporaries per crop and was 5 % of the time of an image (py-spy). With std 1
        (every model here) the values are the same to the bit.
        """
        height, width = images_rgb[0].shape[:2]
        std = np.asarray(self.std, np.float32)
        gain = np.float32(self.scale) / std
        shift = np.asarray(self.mean, np.float32) / std
        nchw = self.layout == "NCHW"
        if nchw:
            out = np.empty((len(images_rgb), 3, height, width), np.float32)
            gain, shift = gain[:, None, None], shift[:, None, None]
        else:
            out = np.empty((len(images_rgb), height, width, 3), np.float32)
        for k, image in enumerate(images_rgb):
            x = image if self.channel_order == "RGB" else image[..., ::-1]
            np.multiply(x.transpose(2, 0, 1) if nchw else x, gain, out=out[k])
            if np.any(shift):
                out[k] -= shift
        return out


def read_spec(
    model_path: str | os.PathLike,
    default: ModelSpec | None = None,
    metadata: dict[str, str] | None = None,
) -> ModelSpec:
    """The spec of a model: sidecar JSON, else ONNX metadata, else ``default``.

    ``metadata``: the ONNX metadata when the caller has the model loaded already (so
    the file is not opened a second time); otherwise it is read here.
    """
    path = Path(model_path)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            return ModelSpec.from_dict(json.loads(sidecar.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{sidecar}: invalid model spec ({exc})") from None
    meta = _onnx_metadata(path) if metadata is None else metadata
    if "model_spec" in meta:
        try:
            return ModelSpec.from_dict(json.loads(meta["model_spec"]))
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{path}: invalid model_spec metadata ({exc})") from None
    if default is None:
        raise ModelError(f"{path}: no model spec (no {sidecar.name}, no model_spec metadata)")
    return default


def _onnx_metadata(path: Path) -> dict[str, str]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - reported when the model is really loaded
        return {}
    return dict(session.get_modelmeta().custom_metadata_map)


class Model(Protocol):
    """A loaded model: named inputs in, list of outputs out.

    ``input_shapes`` / ``output_shapes``: as declared in the file, None when the runtime
    does not tell (ailia); the stages check them when they load a model.
    """

    spec: ModelSpec
    facts: ModelFacts | None  # the spec's facts, typed (util.model_facts)
    path: Path
    input_names: list[str]
    input_shapes: list[Shape] | None
    output_shapes: list[Shape] | None

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]: ...


# Large blocks go straight back to the system when freed. glibc's default threshold
# for that rises to the size of the largest block freed (up to 32 MiB), after which
# decoded photos and model tensors come from a heap that only grows. See
# limit_heap_growth.
LARGE_BLOCK_BYTES = 4 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def limit_heap_growth() -> bool:
    """Have glibc map blocks of LARGE_BLOCK_BYTES or more on their own and unmap them
    when freed (a fixed mmap threshold), so that a long run's memory stays flat. It is a
    process-wide setting, so the application calls it (the command line does), not the
    library. False where the C library is not glibc (nothing changes there).

    Measured over 1000 images of a folder (2 workers, sessions without arenas):
    RSS 166 -> 173 MiB from the second to the last quarter against 179 -> 193 without
    it, at the same CPU time. The threshold 128 KiB cost 50 % more CPU (every model
    tensor mapped afresh)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES))


class OnnxModel:
    """A model run by onnxruntime on the CPU; its spec is read from the loaded session."""

    def __init__(
        self,
        path: str | os.PathLike,
        default_spec: ModelSpec | None = None,
        threads: int = 0,
        expected_kind: str | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 lets onnxruntime use every core
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Several sessions run one after another (detector, landmarks, depth): idle
        # threads that spin would steal the cores from the next session.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Errors come back as ModelError with one line; onnxruntime's own log would add
        # a second, coloured copy on stderr.
        options.log_severity_level = 4
        # No arena and no memory pattern: tensors come from malloc and go back to it.
        # The arena kept the largest call's memory for good and grew whenever two
        # workers' calls met in a new combination: over 1000 images of a folder the
        # process rose from 209 to 246 MiB (second to last quarter) and settled near
        # 260 by image 1100; without it, 179 -> 193, at 59 against 63 ms of CPU per
        # image, and a batch of 16 crops leaves no memory behind (with
        # limit_heap_growth).
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        try:
            self._session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several private types
            raise ModelError(f"{self.path}: cannot load ONNX model ({_first_line(exc)})") from None
        metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self.spec = read_spec(self.path, default_spec, metadata)
        check_kind(self.spec, self.path, expected_kind)
        self.facts = spec_facts(self.spec, self.path)
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        # A symbolic first dimension: several images can go in one call.
        self.dynamic_batch = not isinstance(self._session.get_inputs()[0].shape[0], int)
        self.input_shapes = [_declared(i.shape) for i in self._session.get_inputs()]
        self.output_shapes = [_declared(o.shape) for o in self._session.get_outputs()]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        if len(inputs) != len(self.input_names):
            raise ModelError(
                f"{self.path}: model takes {len(self.input_names)} inputs, not {len(inputs)}"
            )
        feed = dict(zip(self.input_names, inputs, strict=True))
        try:
            return self._session.run(self.output_names, feed)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several private types
            raise ModelError(f"{self.path}: cannot run model ({_first_line(exc)})") from None


class AiliaModel:
    """A model run by the ailia SDK (needs its licence file, which we cannot ship)."""

    def __init__(
        self,
        path: str | os.PathLike,
        spec: ModelSpec,
        env_id: int = -1,
        expected_kind: str | None = None,
    ) -> None:
        try:
            import ailia
        except ImportError:
            raise ModelError("ailia SDK is not installed (pip install ailia)") from None
        self.path = Path(path)
        self.spec = spec
        check_kind(spec, self.path, expected_kind)
        self.facts = spec_facts(spec, self.path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        try:
            self._net = ailia.Net(None, str(self.path), env_id=env_id)
        except TypeError:
            # Without a licence file ailia's own licence check fails with a TypeError.
            raise ModelError(
                f"ailia SDK has no licence file: {os.path.expanduser(AILIA_LICENCE_PATH)} "
                "is missing (use --runtime onnxruntime)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - ailia raises its own error types
            raise ModelError(f"{self.path}: ailia cannot load model ({_first_line(exc)})") from None
        self.input_names = [f"input{i}" for i in range(self._net.get_input_blob_count())]
        self.dynamic_batch = False
        self.input_shapes = self.output_shapes = None  # not checked: ailia does not say

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        try:
            if len(inputs) == 1:
                result = self._net.predict(inputs[0])
                return list(result) if isinstance(result, list | tuple) else [result]
            return list(self._net.predict(list(inputs)))
        except Exception as exc:  # noqa: BLE001 - ailia raises its own error types
            raise ModelError(f"{self.path}: cannot run model ({_first_line(exc)})") from None


def ailia_available() -> bool:
    """True when the ailia SDK is importable and its licence file exists."""
    try:
        import ailia  # noqa: F401
    except ImportError:
        return False
    return Path(os.path.expanduser(AILIA_LICENCE_PATH)).is_file()


def resolve_runtime(runtime: str) -> str:
    """'auto' -> 'ailia' when installed and licensed, else 'onnxruntime'."""
    if runtime == "auto":
        return "ailia" if ailia_available() else "onnxruntime"
    if runtime not in ("onnxruntime", "ailia"):
        raise ModelError(f"unknown runtime {runtime!r} (auto, onnxruntime or ailia)")
    return runtime


def load_model(
    path: str | os.PathLike,
    runtime: str = "onnxruntime",
    default_spec: ModelSpec | None = None,
    env_id: int = -1,
    threads: int = 0,
    expected_kind: str | None = None,
) -> Model:
    """Load a model file with its spec through the chosen runtime.

    ``expected_kind``: the spec ``kind`` the caller needs; another kind, or a spec
    without the keys its kind requires, is a ModelError here, before a wrong file fails
    deep inside a stage.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    if resolve_runtime(runtime) == "ailia":
        spec = read_spec(path, default_spec)
        return AiliaModel(path, spec, env_id=env_id, expected_kind=expected_kind)
    return OnnxModel(path, default_spec, threads=threads, expected_kind=expected_kind)


def spec_facts(spec: ModelSpec, path: str | os.PathLike) -> ModelFacts | None:
    """The typed facts of a spec's kind (None for a kind without any); a ModelError
    naming ``path`` and the key when one is missing or malformed."""
    try:
        return parse_facts(spec.kind, spec.extra, path)
    except SpecError as exc:
        raise ModelError(str(exc)) from None


def check_kind(spec: ModelSpec, path: str | os.PathLike, expected_kind: str | None) -> None:
    """A ModelError naming ``path`` unless the spec is of ``expected_kind`` (when given)."""
    kind = spec.kind
    if expected_kind is not None and kind != expected_kind:
        raise ModelError(
            f"{path}: spec kind {kind!r} ({kind_name(kind)}), "
            f"not {kind_name(expected_kind)} (kind {expected_kind!r})"
        )


def check_spec(spec: ModelSpec, path: str | os.PathLike, expected_kind: str | None = None) -> None:
    """``check_kind``, and a ModelError naming ``path`` unless its facts parse."""
    check_kind(spec, path, expected_kind)
    spec_facts(spec, path)


def shape_fits(shape: Shape, wanted: Shape) -> bool:
    """Same rank, and every dimension equal where both are known."""
    return len(shape) == len(wanted) and all(
        a is None or b is None or a == b for a, b in zip(shape, wanted, strict=True)
    )


def format_shape(shape: Shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def check_single_input(model: Model, wanted: Shape, what: str) -> None:
    """A ModelError unless the model takes one input of shape ``wanted`` (``what`` says
    what that input is, for the message)."""
    shapes = getattr(model, "input_shapes", None)  # None: not declared (ailia, fakes)
    if shapes is None:
        return
    if len(shapes) != 1 or not shape_fits(shapes[0], wanted):
        given = ", ".join(format_shape(s) for s in shapes)
        raise ModelError(f"{model.path}: takes input {given}, not {what} {format_shape(wanted)}")


def _declared(shape: list | None) -> Shape:
    """onnxruntime's declared shape (ints, names of free dimensions, None) -> Shape."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape or [])


PRECISIONS = ("int8", "fp32")


def int8_path(path: str | os.PathLike) -> Path:
    """Where the int8 version of a model sits: NAME.int8.onnx beside NAME.onnx."""
    path = Path(path)
    return path.with_name(f"{path.stem}.int8{path.suffix}")


def model_for_precision(path: str | os.PathLike, precision: str, runtime: str) -> Path:
    """The file to load for a default model: its int8 version (training/quantize.py) when
    asked for, present, and run by onnxruntime (ailia is not tested with int8 graphs);
    else ``path`` itself."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r} ({' or '.join(PRECISIONS)})")
    candidate = int8_path(path)
    if precision == "int8" and runtime == "onnxruntime" and candidate.is_file():
        return candidate
    return Path(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
