"""`tastebud report`: one self-contained page whose charts are drawn. The DOM check always runs;
the rendering check runs where headless Chromium is installed (scripts/setup.sh installs it)."""

import html.parser
import json
import shutil
import struct
import subprocess
import zlib

import pytest

import tastebud
from conftest import run_cli


class Elements(html.parser.HTMLParser):
    """Counts start tags, with their attributes, of an HTML page."""

    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def count(self, tag, **attrs):
        return sum(1 for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items()))


def parse(text):
    parser = Elements()
    parser.feed(text)
    return parser


@pytest.fixture(scope="module")
def report(trained):
    printed = run_cli("report", trained["neumf"])
    path = trained["neumf"] / "report.html"
    assert str(path) in printed
    return path


def test_the_page_holds_every_chart_and_table(report, trained):
    text = report.read_text()
    page = parse(text)
    rows = [json.loads(line) for line in (trained["neumf"] / "metrics.jsonl").read_text().splitlines()]
    # The test metrics: not their interval bounds, counts, or the validation split's copies.
    metrics = [m for m in rows[-1]["metrics"]
               if m != "eval_users" and not m.startswith("val.") and not m.endswith((".lo", ".hi", ".p"))]
    validated = [m for m in metrics if "val." + m in rows[-1]["metrics"]]
    assert validated  # trained with the default validation split
    # The loss, one chart per metric, and the dataset's four.
    assert page.count("svg") == 1 + len(metrics) + 4
    # Loss + test curve per metric + validation curve where there is one + baseline per metric.
    assert page.count("path", **{"class": "series"}) == 1 + 2 * len(metrics) + len(validated)
    assert page.count("path", **{"class": "series", "stroke-dasharray": "6 4"}) == len(metrics)
    assert page.count("path", **{"class": "bar"}) > 20
    assert page.count("circle") == len(rows) * (1 + len(metrics) + len(validated))
    for metric in metrics:
        assert f"Evaluation {metric} per epoch" in text
    # The table gives the run's own bootstrap interval.
    best = rows[-1]["metrics"]
    assert f"[{best['hr@10.lo']:.4f}, {best['hr@10.hi']:.4f}]" in text or any(
        f"[{r['metrics']['hr@10.lo']:.4f}, {r['metrics']['hr@10.hi']:.4f}]" in text for r in rows)
    baseline = json.loads((trained["neumf"] / "baseline.json").read_text())["popularity"]
    assert f"{baseline['hr@10']:.4f}" in text
    assert "Interactions per user" in text and "Events over time" in text and "Event types" in text
    assert "<th>batch_size</th><td>512</td>" in text
    # Self-contained: nothing to fetch, nothing to run.
    assert page.count("script") == 0 and page.count("link") == 0 and page.count("img") == 0


def test_python_writes_the_same_page(report, trained, tmp_path):
    out = tastebud.Model.load(trained["neumf"]).report(tmp_path / "r.html")
    assert (tmp_path / "r.html").read_bytes() == report.read_bytes()
    assert str(out) == str(tmp_path / "r.html")
    run_cli("report", trained["neumf"], "--out", tmp_path / "cli.html")
    assert (tmp_path / "cli.html").read_bytes() == report.read_bytes()


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("headless Chromium is not installed (Debian package chromium)")


def headless(*args):
    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-dev-shm-usage", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def png_pixels(data):
    """(width, height, rows of RGB tuples) of an 8-bit RGB or RGBA PNG, as Chromium writes them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color = header[:4]
    assert depth == 8 and color in (2, 6), header
    channels = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = previous[x]
            c = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, channels)])
        previous = line
    return width, height, rows


def test_chromium_draws_the_charts(report, tmp_path):
    dom = parse(headless("--dump-dom", report.as_uri()))
    assert dom.count("svg") >= 7 and dom.count("path", **{"class": "series"}) >= 5
    shot = tmp_path / "report.png"
    headless("--window-size=1000,1900", f"--screenshot={shot}", report.as_uri())
    _, _, rows = png_pixels(shot.read_bytes())
    colors = {}
    for row in rows:
        for pixel in row:
            colors[pixel] = colors.get(pixel, 0) + 1
    # The model's curves (#1f77b4), the dashed baseline (#d62728) and the histogram bars (#4c78a8)
    # are on the screen, not just in the markup.
    assert colors.get((0x1f, 0x77, 0xb4), 0) > 500
    assert colors.get((0xd6, 0x27, 0x28), 0) > 200
    assert colors.get((0x4c, 0x78, 0xa8), 0) > 5000


def test_each_chart_can_be_written_as_its_own_svg(report, trained, tmp_path):
    import xml.etree.ElementTree as ET
    run_cli("report", trained["neumf"], "--out", tmp_path / "r.html", "--svg-dir", tmp_path / "svg")
    files = sorted((tmp_path / "svg").glob("*.svg"))
    assert [f.name for f in files][:2] == ["01-loss.svg", "02-hr-10.svg"]
    assert len(files) == parse(report.read_text()).count("svg")
    for f in files:
        root = ET.parse(f).getroot()  # well-formed XML, an SVG document of its own
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert root.findall(".//{http://www.w3.org/2000/svg}path")
