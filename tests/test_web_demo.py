"""``fourm-hf demo --web``: the session's checks and views, Gradio staying optional, and the app in
a real headless Chromium (skipped with a reason where Gradio, Selenium or the browser is missing).

The browser test writes a screenshot of each state to ``artifacts/web_demo/`` (gitignored; override
with ``FOURM_WEB_ARTIFACTS``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, subprocess_env
from fourm_hf.app.web_session import (
    BOX_COLUMNS,
    MIN_IMAGE_SIDE,
    VIEW_SIZE,
    DecodingSettings,
    WebDemoSession,
    box_rows,
    load_uploaded_image,
    semseg_legend_html,
    shown_panels,
)

FAST = DecodingSettings(num_steps=2)
ARTIFACTS = Path(os.environ.get("FOURM_WEB_ARTIFACTS", REPO_ROOT / "artifacts" / "web_demo"))


@pytest.fixture(scope="module")
def session():
    return WebDemoSession()


@pytest.fixture(scope="module")
def scene():
    from fourm_hf.evaluation.heldout import heldout_scenes

    return heldout_scenes(1, 64)[0]


# ---- the session (no Gradio, no browser) ------------------------------------------------------------
def test_rgb_to_targets_gives_every_view(session, scene):
    views = session.rgb_to_targets(Image.fromarray(scene["rgb"]), session.image_targets, FAST)
    for name in ("depth", "normal", "semseg", "det"):
        assert views[name].size == (VIEW_SIZE, VIEW_SIZE)
    assert views["rgb"] is None  # the input, not a target
    assert views["caption"].strip()
    assert "fourm-legend" in views["legend"] and "%" in views["legend"]
    assert all(len(row) == len(BOX_COLUMNS) for row in views["boxes"])
    assert all(0.0 < row[1] <= 1.0 for row in views["boxes"])  # real confidences
    assert views["panels"] == ["depth", "normal", "semseg", "legend", "det", "boxes", "caption"]


def test_only_the_panels_of_the_ticked_targets_are_shown(session, scene):
    views = session.rgb_to_targets(Image.fromarray(scene["rgb"]), ["depth"], FAST)
    assert views["panels"] == ["depth"]
    views = session.rgb_to_targets(Image.fromarray(scene["rgb"]), ["det", "semseg"], FAST)
    assert views["panels"] == ["semseg", "legend", "det", "boxes"]
    views = session.caption_to_targets(scene["caption"], ["rgb"], settings=FAST)
    assert views["panels"] == ["rgb"]
    assert shown_panels([]) == []
    with pytest.raises(ValueError, match=r"no panel shows \['height'\]"):
        shown_panels(["height"])


def test_the_app_hides_the_panels_of_targets_not_asked_for(session, scene):
    _require("gradio")
    import gradio

    from fourm_hf.app.web_app import _run

    outputs = dict.fromkeys(["depth", "normal", "semseg", "det", "legend", "caption", "boxes"])
    views = session.rgb_to_targets(Image.fromarray(scene["rgb"]), ["depth", "caption"], FAST)
    updates = dict(zip(outputs, _run(gradio, lambda: views, outputs)))
    assert {name for name, update in updates.items() if update["visible"]} == {"depth", "caption"}
    assert updates["depth"]["value"] is views["depth"] and updates["normal"]["value"] is None


def test_caption_to_rgb_with_guidance(session, scene):
    views = session.caption_to_targets(scene["caption"], ["rgb"], guidance_scale=2.0, settings=FAST)
    assert views["rgb"].size == (VIEW_SIZE, VIEW_SIZE)
    assert np.asarray(views["rgb"]).std() > 0  # a picture, not a flat fill
    assert views["depth"] is None and views["caption"] == ""
    negative = session.caption_to_targets(scene["caption"], ["rgb"], guidance_scale=-1.0, settings=FAST)
    assert not np.array_equal(np.asarray(negative["rgb"]), np.asarray(views["rgb"]))


def test_caption_to_rgb_with_a_negative_prompt(session, scene):
    plain = session.caption_to_targets(scene["caption"], ["rgb"], guidance_scale=2.0, settings=FAST)
    empty = session.caption_to_targets(scene["caption"], ["rgb"], guidance_scale=2.0, settings=FAST, negative_prompt="  ")
    assert np.array_equal(np.asarray(empty["rgb"]), np.asarray(plain["rgb"]))  # empty: no negative term
    steered = session.caption_to_targets(scene["caption"], ["rgb"], guidance_scale=2.0, settings=FAST,
                                         negative_prompt="a red cube.")
    assert steered["rgb"].size == (VIEW_SIZE, VIEW_SIZE)
    assert not np.array_equal(np.asarray(steered["rgb"]), np.asarray(plain["rgb"]))
    with pytest.raises(ValueError, match="negative prompt must be text"):
        session.caption_to_targets(scene["caption"], ["rgb"], settings=FAST, negative_prompt=3)


def test_settings_reach_the_pipeline(session, scene):
    image = Image.fromarray(scene["rgb"])
    first = session.rgb_to_targets(image, ["depth"], DecodingSettings(num_steps=2, seed=1))
    again = session.rgb_to_targets(image, ["depth"], DecodingSettings(num_steps=2, seed=1))
    other = session.rgb_to_targets(image, ["depth"], DecodingSettings(num_steps=2, seed=2, image_temperature=4.0))
    assert np.array_equal(np.asarray(first["depth"]), np.asarray(again["depth"]))
    assert not np.array_equal(np.asarray(first["depth"]), np.asarray(other["depth"]))
    kwargs = DecodingSettings(top_k=5, text_top_p=0.5).pipeline_kwargs(["depth", "caption"])
    assert kwargs["top_k"] == 5 and kwargs["top_p"] == {"depth": 0.0, "caption": 0.5}
    assert kwargs["temperature"] == {"depth": 2.0, "caption": 0.3}


@pytest.mark.parametrize("settings, message", [
    (DecodingSettings(num_steps=0), "steps"), (DecodingSettings(num_steps=2.5), "steps"),
    (DecodingSettings(image_temperature=0), "image temperature"), (DecodingSettings(text_top_p=1.5), "text top-p"),
    (DecodingSettings(top_k=-1), "top-k"), (DecodingSettings(seed=-3), "seed"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        settings.pipeline_kwargs(["depth"])


def test_bad_inputs_get_clear_messages(session, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is not an image\n")
    with pytest.raises(ValueError, match="'notes.png' is not an image"):
        session.rgb_to_targets(str(not_an_image), ["depth"])
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (MIN_IMAGE_SIDE - 1, 200)).save(tiny)
    with pytest.raises(ValueError, match=r"too small \(31x200 px\)"):
        session.rgb_to_targets(str(tiny), ["depth"])
    with pytest.raises(ValueError, match="No image"):
        session.rgb_to_targets(None, ["depth"])
    with pytest.raises(ValueError, match="No target chosen"):
        session.rgb_to_targets(Image.new("RGB", (64, 64)), [])
    with pytest.raises(ValueError, match="cannot generate"):
        session.rgb_to_targets(Image.new("RGB", (64, 64)), ["rgb"])  # the input itself
    with pytest.raises(ValueError, match="caption is empty"):
        session.caption_to_targets("   ", ["rgb"])
    with pytest.raises(ValueError, match="guidance scale"):
        session.caption_to_targets("a red cube.", ["rgb"], guidance_scale=50)


def test_uploads_of_other_forms_load():
    assert load_uploaded_image(np.zeros((40, 50), np.uint8)).size == (50, 40)  # grey -> RGB
    assert load_uploaded_image(np.zeros((40, 40, 4), np.uint8)).mode == "RGB"
    with pytest.raises(ValueError, match="shape"):
        load_uploaded_image(np.zeros((40, 40, 2), np.uint8))
    with pytest.raises(ValueError, match="Expected an image"):
        load_uploaded_image(3)


def test_legend_and_box_table():
    semseg = np.zeros((20, 20), np.int64)
    semseg[:5] = 2
    semseg[19, 19] = 1
    legend = semseg_legend_html(semseg, ["sky", "floor", "sphere"])
    assert legend.index("sky 75%") < legend.index("sphere 25%") < legend.index("floor &lt;1%")
    assert box_rows([{"label": "red cube", "box": [0.1, 0.25, 0.5, 0.75], "score": 0.61234}]) == [
        ["red cube", 0.612, 0.1, 0.25, 0.5, 0.75]]
    assert box_rows([{"label": "red cube", "box": [0.1, 0.25, 0.5, 0.75], "score": None}])[0][1] is None


def test_bad_checkpoint_folder(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        WebDemoSession(tmp_path)


# ---- Gradio stays optional ----------------------------------------------------------------------------
def test_package_and_file_demo_do_not_import_gradio(tmp_path):
    code = (
        "import sys\n"
        "import fourm_hf, fourm_hf.cli, fourm_hf.commands.demo, fourm_hf.app.demo, fourm_hf.app, fourm_hf.app.web_session\n"
        f"fourm_hf.app.demo.run_demo(out={str(tmp_path)!r}, num_scenes=1, photos=[], prompts=0, progress=False)\n"
        "loaded = sorted(name for name in sys.modules if name.split('.')[0] in ('gradio', 'gradio_client'))\n"
        "assert not loaded, loaded\n"
        "print('no gradio')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no gradio" in result.stdout
    assert (tmp_path / "report.md").is_file()


def test_missing_gradio_gives_the_install_hint(monkeypatch, capsys):
    from fourm_hf.cli import main
    from fourm_hf.app.web_app import INSTALL_HINT, import_gradio

    monkeypatch.setitem(sys.modules, "gradio", None)  # what Python does when a module is not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[web\]"'):
        import_gradio()
    assert main(["demo", "--web", "--port", "7860"]) == 2
    assert INSTALL_HINT in capsys.readouterr().err


def test_bad_port_is_refused(capsys):
    from fourm_hf.cli import main

    assert main(["demo", "--web", "--port", "70000"]) == 2
    assert "--port must lie in [1, 65535]" in capsys.readouterr().err


# ---- the app in a real browser ------------------------------------------------------------------------
def _require(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e \".[all]\")")


def _browser_paths() -> tuple[str, str]:
    """Chromium and its driver, or a skip naming what is missing."""
    _require("gradio", "selenium")
    browser = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no headless browser: apt-get install chromium chromium-driver (.ci/run tries to)")
    return browser, driver


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def web_app():
    """``fourm-hf demo --web`` started as a user starts it; yields its printed local URL."""
    _require("gradio")
    port = _free_port()
    command = [sys.executable, "-m", "fourm_hf.cli", "demo", "--web", "--port", str(port)]
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines = []
    try:
        deadline = time.monotonic() + 180
        url = None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            lines.append(line)
            if "running at http://" in line:
                url = line.split("running at ", 1)[1].split()[0]
        assert url == f"http://127.0.0.1:{port}/", "".join(lines)[-3000:]
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_space_folder_installs_the_package_from_its_requirements(tmp_path):
    """scripts/make_space.sh gives a folder whose requirements.txt pip resolves from the folder alone:
    the package source (with the bundled checkpoint) under fourm-hf/, no placeholder URL."""
    space = tmp_path / "space"
    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "make_space.sh"), str(space)], check=True, capture_output=True)
    assert sorted(path.name for path in space.iterdir()) == ["README.md", "app.py", "fourm-hf", "requirements.txt"]
    requirements = [line.strip() for line in (space / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert "./fourm-hf[web]" in requirements and not any("OWNER" in line or "git+" in line for line in requirements)
    assert (space / "fourm-hf" / "src" / "fourm_hf" / "checkpoints" / "fourm-scenes64" / "model.safetensors").is_file()
    assert not list((space / "fourm-hf").rglob("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
                             "--no-build-isolation", "-r", "requirements.txt"], cwd=space, capture_output=True, text=True,
                            env=subprocess_env(), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Would install fourm-hf-" in result.stdout, result.stdout
    with pytest.raises(subprocess.CalledProcessError):  # never overwrites a folder
        subprocess.run(["bash", str(REPO_ROOT / "scripts" / "make_space.sh"), str(space)], check=True, capture_output=True)


def test_space_app_builds_the_same_app(monkeypatch):
    _require("gradio")
    import runpy

    import gradio

    from fourm_hf.checkpoints import bundled_checkpoint

    monkeypatch.setenv("FOURM_CHECKPOINT", bundled_checkpoint())
    space = runpy.run_path(str(REPO_ROOT / "examples" / "space" / "app.py"), run_name="space_app")
    assert isinstance(space["demo"], gradio.Blocks)
    assert space["CHECKPOINT"] == bundled_checkpoint()
    assert not list((REPO_ROOT / "src" / "fourm_hf" / "web").glob("*.pyi"))  # Gradio wrote no stub files
    assert sorted(path.name for path in Path(space["demo"].fourm_examples_dir).iterdir())[:2] == [
        "heldout_scene_0.png", "heldout_scene_1.png"]
    requirements = (REPO_ROOT / "examples" / "space" / "requirements.txt").read_text()
    assert "gradio>=6.0,<7" in requirements and "./fourm-hf[web]" in requirements


def test_cli_serves_the_app_at_the_printed_url(web_app):
    from urllib.request import urlopen

    with urlopen(web_app, timeout=30) as response:
        assert response.status == 200
        page = response.read().decode("utf-8")
    with urlopen(web_app + "theme.css", timeout=30) as response:
        theme = response.read().decode("utf-8")
    assert 'content="4M any-to-any"' in page
    assert "--font: ui-sans-serif, system-ui" in theme  # system fonts: nothing fetched from a font CDN
    assert "googleapis" not in page + theme and "@import" not in theme


# Records whether any "k/N steps" progress text appeared while the page changed (however short the run).
PROGRESS_OBSERVER = """
window.fourmProgressSeen = false;
new MutationObserver(() => {
  if (/\\d+\\/\\d+ steps/.test(document.body.innerText)) { window.fourmProgressSeen = true; }
}).observe(document.body, {subtree: true, childList: true, characterData: true});
"""


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1150", "--hide-scrollbars"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(driver))


def test_web_demo_in_headless_chromium(web_app, scene, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    scene_file, bad_file = tmp_path / "heldout_scene.png", tmp_path / "not_an_image.png"
    Image.fromarray(scene["rgb"]).save(scene_file)
    bad_file.write_text("this is not an image\n")
    browser = _driver()
    wait = WebDriverWait(browser, 60, poll_frequency=0.25)

    def find(selector):
        return browser.find_element(By.CSS_SELECTOR, selector)

    def shown_image(selector):
        images = browser.find_elements(By.CSS_SELECTOR, f"{selector} img")
        return images[0] if images and images[0].get_attribute("src") and images[0].get_property("naturalWidth") else None

    def set_steps(value: int):
        steps = wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, "#steps input[type=number]"))[0]
        steps.send_keys(Keys.CONTROL, "a")
        steps.send_keys(str(value), Keys.TAB)
        wait.until(lambda _: find("#steps input[type=range]").get_attribute("value") == str(value))

    try:
        browser.get(web_app)
        wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, "#rgb_input input[type=file]"))
        # few decoding steps: open the advanced settings and type 2 into the steps box
        find("#advanced button.label-wrap").click()
        set_steps(2)

        # 1. RGB -> depth + caption on a held-out scene
        find("#rgb_input input[type=file]").send_keys(str(scene_file))
        wait.until(lambda _: shown_image("#rgb_input"))
        for label in browser.find_elements(By.CSS_SELECTOR, "#rgb_targets label"):
            if label.text.strip() not in ("depth", "caption"):
                label.click()
        checked = [label.text.strip() for label in browser.find_elements(By.CSS_SELECTOR, "#rgb_targets label")
                   if label.find_element(By.CSS_SELECTOR, "input").is_selected()]
        assert checked == ["depth", "caption"]
        find("#rgb_run").click()
        wait.until(lambda _: shown_image("#rgb_depth") and find("#rgb_caption textarea").get_property("value").strip())
        assert shown_image("#rgb_depth").get_property("naturalWidth") == VIEW_SIZE
        assert not shown_image("#rgb_normal")  # not ticked, not generated
        for name in ("normal", "semseg", "legend", "det", "boxes"):  # their panels are hidden, not left empty
            assert not any(element.is_displayed() for element in browser.find_elements(By.CSS_SELECTOR, f"#rgb_{name}")), name
        browser.save_screenshot(str(ARTIFACTS / "1_rgb_to_depth_caption.png"))

        # 2. caption -> RGB
        browser.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Caption -> RGB')]").click()
        prompt = wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, "#caption_input textarea"))[0]
        prompt.send_keys(scene["caption"])
        find("#negative_prompt textarea").send_keys("a red cube.")  # reaches the pipeline as negative_prompt
        find("#caption_run").click()
        wait.until(lambda _: shown_image("#caption_rgb"))
        assert shown_image("#caption_rgb").get_property("naturalWidth") == VIEW_SIZE
        for name in ("depth", "normal", "semseg", "det", "caption"):  # RGB alone was asked for
            assert not any(e.is_displayed() for e in browser.find_elements(By.CSS_SELECTOR, f"#caption_{name}")), name
        browser.save_screenshot(str(ARTIFACTS / "2_caption_to_rgb.png"))

        # 3. a file that is not an image: a message, not a stack trace
        browser.find_element(By.XPATH, "//button[@role='tab'][contains(., 'RGB -> all')]").click()
        wait.until(lambda _: find("#rgb_input").is_displayed())
        find("#rgb_input button[aria-label='Remove Image']").click()
        wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, "#rgb_input input[type=file]"))
        find("#rgb_input input[type=file]").send_keys(str(bad_file))
        find("#rgb_run").click()
        toast = wait.until(lambda _: [t for t in browser.find_elements(By.CSS_SELECTOR, ".toast-body")
                                      if "is not an image" in t.text])[0]
        assert "'not_an_image.png' is not an image this demo can read" in toast.text
        assert "Traceback" not in browser.page_source
        browser.save_screenshot(str(ARTIFACTS / "3_not_an_image.png"))

        # 4. a bundled example (held-out scene 1) -> every target at the default 8 steps: legend and box table too
        set_steps(8)
        find("#rgb_input button[aria-label='Remove Image']").click()
        for close in browser.find_elements(By.CSS_SELECTOR, ".toast-close"):
            close.click()
        browser.find_elements(By.CSS_SELECTOR, "#rgb_examples button.gallery-item")[1].click()
        wait.until(lambda _: shown_image("#rgb_input"))
        for label in browser.find_elements(By.CSS_SELECTOR, "#rgb_targets label"):
            if not label.find_element(By.CSS_SELECTOR, "input").is_selected():
                label.click()
        browser.execute_script(PROGRESS_OBSERVER)
        find("#rgb_run").click()
        wait.until(lambda _: all(shown_image(f"#rgb_{name}") for name in ("depth", "normal", "semseg", "det"))
                   and "%" in find("#rgb_legend").text)
        assert find("#rgb_caption textarea").get_property("value").strip()
        browser.save_screenshot(str(ARTIFACTS / "4_rgb_to_all.png"))
        # the progress indicator followed the decoding steps (the pipeline's tqdm bar, "k/N steps")
        assert browser.execute_script("return window.fourmProgressSeen"), "no progress shown during generation"
    finally:
        browser.quit()
    for name in ("1_rgb_to_depth_caption.png", "2_caption_to_rgb.png", "3_not_an_image.png", "4_rgb_to_all.png"):
        with Image.open(ARTIFACTS / name) as shot:
            assert shot.size[0] >= 1000
