"""The demo page: served on 127.0.0.1, called through gradio_client and driven once in headless Chromium.

Results must equal ``restore()`` on the same images and tasks; bad uploads get a readable message; two clients at once
get their own results; ``auto`` routes per image through the router and shows its confidence.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data
from tiny_models import save_base_and_adapters

from peft_adaptir import load_adapters, load_base_model, restore
from peft_adaptir.cli import main
from peft_adaptir.demo import DemoEngine, UnknownTaskError, load_engine
from peft_adaptir.demo.engine import ShippedRouter
from peft_adaptir.metrics import calculate_psnr

gr = pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
gradio_client = pytest.importorskip("gradio_client")

from peft_adaptir.demo.ui import TABLE_HEADERS, build_app  # noqa: E402

ARTIFACTS = Path(os.environ.get("PEFT_ADAPTIR_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
ROUTED = ("denoise", 0.875)  # what the stub router answers for every image


def stub_router(model, images):
    """A router that always picks one adapter: ``auto`` must then equal choosing it by hand."""
    return [ROUTED] * len(images)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, root, reference model): the demo on a tiny Swin2SR with two task adapters, and real photo crops."""
    root = tmp_path_factory.mktemp("demo")
    save_base_and_adapters(root, ("derain", "denoise"))
    photo = skimage_data.astronaut()  # a real colour photo, 512 x 512
    Image.fromarray(photo[100:148, 150:214]).save(root / "a.png")
    Image.fromarray(photo[300:340, 260:316]).save(root / "b.png")
    noisy = np.clip(photo[100:148, 150:214] + np.random.default_rng(0).normal(0, 20, (48, 64, 3)), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(root / "a-noisy.png")
    Image.fromarray(photo[:40, :52].mean(axis=2).astype(np.uint8), mode="L").save(root / "grey.png")
    rgba = np.dstack([photo[200:232, 200:244], np.tile(np.arange(44, dtype=np.uint8) * 5, (32, 1))])
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    (root / "notes.txt").write_text("not an image")
    Image.new("L", (2049, 2048)).save(root / "huge.png")  # 1 pixel column over the stated limit
    adapters = {"derain": str(root / "derain"), "denoise": str(root / "denoise")}
    engine = load_engine(str(root / "base"), adapters)
    engine.router = stub_router
    app = build_app(engine)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    reference = load_adapters(load_base_model(str(root / "base")), adapters)
    yield f"http://127.0.0.1:{port}/", root, reference
    app.close()


def _client(url):
    return gradio_client.Client(url, verbose=False)


def _call(client, files, task="derain", per_image="", references=None, tile=0):
    upload = gradio_client.handle_file
    refs = [upload(str(path)) for path in references] if references else None
    return client.predict([upload(str(p)) for p in files], task, per_image, refs, tile, api_name="/restore")


def _expected(reference, root, names, tasks, tile=0):
    images = [Image.open(root / name) for name in names]
    images = [image.convert("RGBA" if "A" in image.getbands() else image.mode) for image in images]
    return [np.asarray(image) for image in restore(reference, images, adapter_names=tasks, tile_size=tile)]


def test_client_result_equals_restore_and_reports_psnr(served):
    url, root, reference = served
    names = ["a-noisy.png", "b.png"]
    references = [root / "a.png", root / "b.png"]
    slider, gallery, table, downloads = _call(
        _client(url), [root / n for n in names], per_image="derain, denoise", references=references
    )
    expected = _expected(reference, root, names, ["derain", "denoise"])
    assert [Path(p).name for p in downloads] == ["a-noisy-derain.png", "b-denoise.png"]
    for path, want in zip(downloads, expected):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), want)
    assert table["headers"] == TABLE_HEADERS
    assert [row[:3] for row in table["data"]] == [["a-noisy.png", "derain", "-"], ["b.png", "denoise", "-"]]
    clean = np.asarray(Image.open(root / "a.png")) / 255.0
    assert table["data"][0][4] == f"{calculate_psnr(expected[0] / 255.0, clean):.2f}"
    noisy = np.asarray(Image.open(root / "a-noisy.png")) / 255.0
    assert table["data"][0][3] == f"{calculate_psnr(noisy, clean):.2f}"
    # the before/after pair shows the first image: its upload and its result
    np.testing.assert_array_equal(np.asarray(Image.open(slider[0])), np.asarray(Image.open(root / names[0])))
    np.testing.assert_array_equal(np.asarray(Image.open(slider[1])), expected[0])
    assert len(gallery) == 2 and gallery[1]["caption"] == "b.png: denoise"
    # the two adapters give different results on this photo, so the per-image choice is visible
    other = _expected(reference, root, ["b.png"], ["derain"])[0]
    assert np.abs(other.astype(int) - expected[1].astype(int)).max() > 1


def test_grey_and_rgba_keep_their_mode_and_tile(served):
    """Grey and RGBA come back in their mode (alpha unchanged); with a tile size under the image size, tiled."""
    url, root, reference = served
    names = ["grey.png", "rgba.png"]
    *_, downloads = _call(_client(url), [root / n for n in names], task="denoise", tile=36)
    results = [Image.open(path) for path in downloads]
    assert [image.mode for image in results] == ["L", "RGBA"]
    for image, want in zip(results, _expected(reference, root, names, ["denoise", "denoise"], tile=36)):
        np.testing.assert_array_equal(np.asarray(image), want)
    untiled = _expected(reference, root, names, ["denoise", "denoise"])
    assert not np.array_equal(np.asarray(results[1]), untiled[1])  # the tile size reached restore()
    alpha = np.asarray(Image.open(root / "rgba.png"))[..., 3]
    np.testing.assert_array_equal(np.asarray(results[1])[..., 3], alpha)


def test_auto_routes_each_image_and_shows_confidence(served):
    url, root, reference = served
    _, _, table, downloads = _call(_client(url), [root / "b.png", root / "a.png"], per_image="auto, derain")
    assert [row[1:3] for row in table["data"]] == [["denoise", "0.88"], ["derain", "-"]]
    expected = _expected(reference, root, ["b.png", "a.png"], ["denoise", "derain"])
    for path, want in zip(downloads, expected):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), want)


@pytest.mark.parametrize(
    ("files", "kwargs", "message"),
    [
        (["notes.txt"], {}, "notes.txt is not an image the demo can read"),
        (["huge.png"], {}, "huge.png is 2049 x 2048 pixels; the demo accepts images up to 4,194,304 pixels"),
        (["a.png"], {"per_image": "dehaze"}, "Unknown task 'dehaze'; choose one of auto, derain, denoise, __base__"),
        (["a.png"], {"task": "dehaze"}, "dehaze is not in the list of choices"),
        (["a.png"], {"per_image": "derain, denoise"}, "2 tasks were given for 1 image(s)"),
        (["a.png", "b.png"], {"references": ["a.png"]}, "1 clean reference(s) for 2 image(s)"),
        ([], {}, "Upload at least one image first"),
    ],
)
def test_bad_input_gets_a_readable_message(served, files, kwargs, message):
    url, root, _ = served
    if "references" in kwargs:
        kwargs = {**kwargs, "references": [root / name for name in kwargs["references"]]}
    with pytest.raises(gradio_client.exceptions.AppError) as caught:
        _call(_client(url), [root / name for name in files], **kwargs)
    assert message in str(caught.value)
    assert "Traceback" not in str(caught.value) and "/tmp/" not in str(caught.value)


def test_two_clients_at_once_get_their_own_results(served):
    """Both requests run while the other is in flight; each gets its own task's result, nothing mixed."""
    url, root, reference = served
    names = ["a.png", "b.png", "a-noisy.png"]
    clients = {task: _client(url) for task in ("derain", "denoise")}
    jobs = {
        task: client.submit(
            [gradio_client.handle_file(str(root / n)) for n in names], task, "", None, 0, api_name="/restore"
        )
        for task, client in clients.items()
    }
    with ThreadPoolExecutor(2) as pool:
        results = {task: pool.submit(job.result, 120) for task, job in jobs.items()}
        results = {task: future.result() for task, future in results.items()}
    for task, (*_, downloads) in results.items():
        for path, want in zip(downloads, _expected(reference, root, names, [task] * 3)):
            np.testing.assert_array_equal(np.asarray(Image.open(path)), want)


def test_engine_offers_auto_only_with_a_router(served):
    _, _, reference = served
    engine = DemoEngine(reference)
    assert engine.choices == ["derain", "denoise", "__base__"]
    with pytest.raises(UnknownTaskError, match="'auto' needs a degradation router; none is loaded"):
        engine.check_task("auto")
    assert DemoEngine(reference, router=stub_router).choices[0] == "auto"


def test_shipped_router_is_found_and_auto_equals_restore_auto():
    """With the shipped zoo, the demo offers ``auto`` and its result is exactly ``restore(..., adapter="auto")``."""
    engine = load_engine()
    assert isinstance(engine.router, ShippedRouter), "the shipped router must fit the shipped adapters"
    assert engine.choices[0] == "auto"
    photo = Image.fromarray(skimage_data.astronaut()[96:160, 160:240])
    (result,) = engine.restore([photo], ["auto"])
    expected, (decision,) = restore(engine.model, [photo], adapter="auto", batch_size=engine.batch_size)
    assert np.array_equal(np.asarray(result.image), np.asarray(expected[0]))
    assert result.confidence == pytest.approx(decision.probability)
    assert result.task in engine.tasks or decision.mode == "soft"


def test_space_app_builds_from_its_variables(served, monkeypatch):
    """examples/space/app.py reads ADAPTIR_BASE / ADAPTIR_ADAPTERS and exposes ``demo`` (what a Space runs)."""
    _, root, _ = served
    monkeypatch.setenv("ADAPTIR_BASE", str(root / "base"))
    monkeypatch.setenv("ADAPTIR_ADAPTERS", f"derain={root / 'derain'}, denoise={root / 'denoise'}")
    path = Path(__file__).resolve().parents[1] / "examples" / "space" / "app.py"
    spec = importlib.util.spec_from_file_location("space_app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.demo, gr.Blocks)
    assert "/restore" in {f"/{dep['api_name']}" for dep in module.demo.config["dependencies"] if dep["api_name"]}


def test_cli_demo_errors_are_explained(capsys):
    assert main(["demo", "--adapter", "derain"]) == 2
    assert "must look like NAME=PATH_OR_HUB_ID" in capsys.readouterr().err


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Chromium is missing: apt-get install chromium chromium-driver (the browser test needs both)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing: pip install '.[browser-test]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def _click(browser, element_id):
    """Click once the layout has settled (an upload in progress covers the button for a moment)."""
    from selenium.common.exceptions import ElementClickInterceptedException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(driver):
        element = driver.find_element(By.ID, element_id)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        try:
            element.click()
        except ElementClickInterceptedException:
            return False
        return True

    WebDriverWait(browser, 120, poll_frequency=0.5).until(attempt)


def test_browser_upload_run_and_see_the_result(served):
    """Headless Chromium: a non-image gets a message in the page; a photo gets a result image; screenshot saved."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, root, _ = served
    browser = _browser()
    wait = WebDriverWait(browser, 120)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        browser.get(url)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#images input[type=file]")))
        upload.send_keys(str(root / "a-noisy.png"))
        wait.until(ec.text_to_be_present_in_element((By.ID, "images"), "KB"))  # uploaded: its size is shown
        _click(browser, "run")
        result = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#results img")))
        wait.until(ec.text_to_be_present_in_element((By.ID, "downloads"), "a-noisy-denoise"))
        assert result.get_attribute("src") and browser.find_elements(By.CSS_SELECTOR, "#slider img")
        browser.save_screenshot(str(ARTIFACTS / "demo-browser.png"))
        assert Image.open(ARTIFACTS / "demo-browser.png").size[0] > 0
        # a text file given as the clean reference: the message appears in the page
        browser.find_element(By.CSS_SELECTOR, "#references input[type=file]").send_keys(str(root / "notes.txt"))
        wait.until(ec.text_to_be_present_in_element((By.ID, "references"), " B"))
        _click(browser, "run")
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "notes.txt is not an image the demo"))
    except Exception:
        browser.save_screenshot(str(ARTIFACTS / "demo-browser-failure.png"))
        raise
    finally:
        browser.quit()
