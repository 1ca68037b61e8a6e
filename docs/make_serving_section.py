"""The README's *Serving* section, generated: every `curl` example is run against a real `facemask serve` (the
offline demo model: the full-size untrained recognizer and the real mobilenet0.25 detector) and printed with the
output it gave; the load table comes from the newest ``benchmarks/results/serve-load-*.json``.

    python docs/make_serving_section.py                 # print the section
    python docs/make_serving_section.py --write README.md   # replace the text between the markers

``--write`` replaces what lies between ``<!-- serving:start -->`` and ``<!-- serving:end -->`` of README.md, and the
load figures between ``<!-- serve-load:start -->`` and ``<!-- serve-load:end -->`` of docs/serve.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
START, END = "<!-- serving:start -->", "<!-- serving:end -->"
SHOWN_URL = "http://127.0.0.1:8000"
PHOTOS = {"alice_2014.jpg": "person_a_1", "alice_2025.jpg": "person_a_2", "bob.jpg": "impostor_1"}
EXAMPLES = [
    ("Embed: per image, per face: box, detector score, landmarks, the 512-d embedding",
     "curl -s -F images=@alice_2014.jpg $URL/v1/embed | jq -c '.images[0].faces[0] | {box, det_score, "
     "landmarks: .landmarks[:2], embedding: \"\\(.embedding | length) floats\"}'"),
    ("Verify two photos", "curl -s -F image_a=@alice_2014.jpg -F image_b=@alice_2025.jpg $URL/v1/verify | "
                          "jq -c '{similarity, threshold, same}'"),
    ("Enrol an identity", "curl -s -F identity=alice -F images=@alice_2014.jpg $URL/v1/gallery/identities | jq -c"),
    ("Identify the faces of a photo", "curl -s -F image=@alice_2025.jpg -F top_k=2 $URL/v1/identify | "
                                      "jq -c '.faces[] | {identity, similarity, det_score, candidates}'"),
    ("The gallery", "curl -s $URL/v1/gallery | jq -c '{size, identities, threshold}'"),
    ("Delete an identity", "curl -s -X DELETE $URL/v1/gallery/identities/alice | jq -c"),
    ("ModelScope's `/call` (JSON, the image as base64), as `modelscope server` answers it",
     "jq -n --rawfile b <(base64 -w0 bob.jpg) '{input: {image: $b}}' | curl -s -H 'Content-Type: application/json' "
     "-d @- $URL/call | jq -c '{keys: keys, scores, boxes}'"),
    ("Health and readiness", "curl -s $URL/healthz; echo; curl -s $URL/readyz | "
                             "jq -c '{status, device, precision, engine}'"),
    ("A bad request: one error shape, a 4xx", "curl -s -w ' HTTP %{http_code}' -F image=@README.md $URL/v1/identify"),
    ("Prometheus metrics (excerpt)", "curl -s $URL/metrics | grep -E '^facemask_(requests_total.*identify|"
                                     "batch_size_(count|sum)|faces_processed_total|queue_depth)'"),
]
CLIENT = '''import base64, requests
image = base64.b64encode(open("bob.jpg", "rb").read()).decode()
answer = requests.post("http://127.0.0.1:8000/call", json={"input": {"image": image}}).json()
print(len(answer["img_embedding"][0]), answer["scores"])  # the pipeline's OutputKeys, as modelscope server sends them
'''


def run_examples(model: Path, photos: dict[str, Path], folder: Path) -> list[tuple[str, str, str]]:
    """(title, command, output) for each example, run in ``folder`` against a fresh server."""
    from modelscope_facemask.testing.served_process import ServedFaceMask

    for name, key in PHOTOS.items():
        shutil.copy(photos[key], folder / name)
    shutil.copy(ROOT / "README.md", folder / "README.md")
    shown = []
    with ServedFaceMask(model, gallery=folder / "gallery") as server:
        for title, command in EXAMPLES:
            done = subprocess.run(["bash", "-c", command.replace("$URL", server.url)], cwd=folder,
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise SystemExit(f"example failed ({done.returncode}): {command}\n{done.stderr}")
            output = done.stdout.strip().replace(server.url, SHOWN_URL)
            shown.append((title, command.replace("$URL", SHOWN_URL), output))
        client = subprocess.run([sys.executable, "-c", CLIENT.replace(SHOWN_URL, server.url)], cwd=folder,
                                capture_output=True, text=True, timeout=300)
        if client.returncode != 0:
            raise SystemExit(f"the client example failed: {client.stderr}")
        shown.append(("", "", client.stdout.strip()))
    return shown


def load_table(path: Path) -> list[str]:
    """The load benchmark's figures (benchmarks/serve_load.py's JSON) as markdown."""
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = ["| clients | requests/s | p50 ms | p99 ms | mean batch | max batch | errors |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for level in data["levels"]:
        rows.append(f"| {level['clients']} | {level['requests_per_s']:.2f} | {level['p50_ms']:.0f} | "
                    f"{level['p99_ms']:.0f} | {level['mean_batch']:.1f} | {level['max_batch']} | {level['errors']} |")
    inproc, targets = data["in_process"], data["targets"]
    rows += ["", f"Same run, in process: `pipeline(list)` {inproc['batched_images_per_s']:.2f} images/s, one image "
                 f"{inproc['single_image_p50_ms']:.0f} ms (p50). Served at 16 clients / in-process batched: "
                 f"{targets['served_16_over_in_process_batched']['measured']:.2f}×; server peak RSS "
                 f"{data['server_peak_rss_mib']:.0f} MiB. {data['recognizer']}, {data['detector']}, "
                 f"{data['cpu_count']} CPU cores ({data['date']}; {data['note']}). From "
                 f"`{path.relative_to(ROOT).as_posix()}`, made by `benchmarks/serve_load.py`."]
    return rows


def targets_table(path: Path) -> list[str]:
    """The issue's serving targets with the measured figures (docs/serve.md)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = ["| target | measured | how |", "| --- | --- | --- |"]
    for name, entry in data["targets"].items():
        measured = entry["measured"]
        rows.append(f"| {name.replace('_', ' ')} {entry.get('target', '')} | {measured:.3g} | {entry.get('how', '')} |")
    return rows


def write_between(path: Path, start: str, end: str, text: str) -> None:
    """Replace what lies between the markers ``start`` and ``end`` of ``path`` (kept) with ``text``."""
    page = path.read_text(encoding="utf-8")
    if start not in page or end not in page:
        raise SystemExit(f"{path}: no {start} ... {end} markers; add them where the text goes")
    before, rest = page.split(start, 1)
    path.write_text(before + start + "\n" + text + "\n" + end + rest.split(end, 1)[1], encoding="utf-8")


def newest_load_result() -> Path:
    found = sorted((ROOT / "benchmarks" / "results").glob("serve-load-*.json"))
    if not found:
        raise SystemExit("no benchmarks/results/serve-load-*.json: run benchmarks/serve_load.py first")
    return found[-1]


def section(examples: list[tuple[str, str, str]], load: Path) -> str:
    """The markdown between the markers."""
    lines = [START, "", "Start the server (extra `[serve]`; port 8000 on 127.0.0.1 unless `--host`/`--port`):", "",
             "```bash", ".venv/bin/pip install -e '.[serve]'",
             ".venv/bin/facemask serve --model MODEL --gallery ./gallery   # MODEL: a hub id or a folder, as everywhere",
             "```", "", "Each example below was run against such a server (the demo's untrained model, so the "
             "similarities mean nothing) by `docs/make_serving_section.py`, which wrote the output shown:", ""]
    for title, command, output in examples:
        if not title:
            continue
        lines += [f"- {title}:", "", "  ```console", f"  $ {command}", *(f"  {line}" for line in
                                                                        output.splitlines()), "  ```", ""]
    client_output = examples[-1][2]
    lines += ["An existing ModelScope client works unchanged (the same JSON as `modelscope server`):", "", "```python",
              *CLIENT.strip().splitlines(), "```", "", "```text", client_output, "```", ""]
    lines += ["The web console at `/` (plain HTML and JavaScript from the package, nothing fetched from elsewhere): "
              "drop a photo and see every face labelled with its identity, enrol, list and delete. Its browser test "
              "(`tests/test_serve_console.py`, headless Chromium) took this screenshot:", "",
              "![The web console after identifying an uploaded photo: the annotated picture, the faces found, "
              "the gallery](docs/images/serve-console.jpg)", ""]
    lines += ["**Past one machine, Ray Serve** (extra `[ray]`): the same app on `--replicas N` replicas, batching "
              "with `@serve.batch`, every enrolment through one gallery writer; replicas reload the gallery folder "
              "when it changes. On a laptop this starts a local Ray; on a cluster (`ray start --head` on one node, "
              "`ray start --address HEAD:6379` on the others, or a [KubeRay](https://docs.ray.io/en/latest/cluster/"
              "kubernetes/index.html) RayCluster) give its address. The model and gallery folders must be at the "
              "same path on every node.", "", "```bash",
              ".venv/bin/facemask serve --model MODEL --gallery /shared/gallery --ray --replicas 2",
              ".venv/bin/facemask serve --model /shared/model --gallery /shared/gallery --ray --ray-address auto "
              "--replicas 8 --gpus-per-replica 1 --host 0.0.0.0",
              "```", ""]
    lines += ["Load on loopback (`/v1/embed`, one real portrait per request, `--max-batch 16`):", "",
              *load_table(load), "",
              "Routes, limits, API keys, metrics and shutdown: [docs/serve.md](docs/serve.md); the console: "
              "[docs/serve-console.md](docs/serve-console.md).", "", END]
    return "\n".join(_wrapped(lines))


def _wrapped(lines: list[str], width: int = 120) -> list[str]:
    """Prose lines wrapped at ``width`` as the rest of the README; code blocks, tables and images kept as they are."""
    import textwrap

    out, code = [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            code = not code
        if code or line.lstrip().startswith(("```", "|", "![", "<!--")) or len(line) <= width:
            out.append(line)
        else:
            indent = "  " if line.startswith("- ") else ""
            out += textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False,
                                 break_long_words=False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path, default=None, help="the README to update between the markers")
    args = parser.parse_args(argv)
    from modelscope_facemask.model_files.assets import portrait_photos
    from modelscope_facemask.modelscope_adapters.configuration import FACEMASK_UNITS
    from modelscope_facemask.tools.demo.demo_model import demo_model_dir

    model, _ = demo_model_dir(FACEMASK_UNITS)
    with tempfile.TemporaryDirectory(prefix="serving-examples-") as work:
        text = section(run_examples(model, portrait_photos(), Path(work)), newest_load_result())
    if args.write is None:
        print(text)
        return 0
    write_between(args.write, START, END, text.removeprefix(START + "\n").removesuffix("\n" + END))
    load = newest_load_result()
    write_between(ROOT / "docs" / "serve.md", "<!-- serve-load:start -->", "<!-- serve-load:end -->",
                  "\n".join(load_table(load) + ["", *targets_table(load)]))
    print(f"wrote the serving section of {args.write} and the load figures of docs/serve.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
