"""The web demo in headless Chromium (selenium): a user types questions, the branches stream side by side.

Each test drives the page the server serves at /demo (the real app on 127.0.0.1, a free port) and checks
what the columns show against the same requests sent with the `openai` client. Skipped where Chromium,
chromedriver or selenium is missing; `make test-browser` installs them (Debian: chromium chromium-driver).
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

from tests.serving.conftest import KEY, start_live

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
MISSING = [name for name, ok in (("chromium", CHROMIUM), ("chromedriver", DRIVER),
                                  ("selenium", importlib.util.find_spec("selenium"))) if not ok]
if MISSING and os.environ.get("PARALLELMIND_REQUIRE_BROWSER") == "1":  # make test-browser: a skip is a failure
    raise RuntimeError(f"the browser test needs {', '.join(MISSING)}")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(bool(MISSING), reason=f"no {', '.join(MISSING)} (make test-browser installs them)")]


@pytest.fixture(scope="module")
def demo_live(tiny_loaded):
    srv = start_live(tiny_loaded, web_demo=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)  # no driver download
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def fill(drv, **fields) -> None:
    """Set the form's inputs / selects / textarea by id (the way a user's typing leaves them)."""
    for name, value in fields.items():
        drv.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                           "e.dispatchEvent(new Event('change'));", name, str(value))


def send_and_wait(drv, timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    drv.find_element(By.ID, "send").click()
    WebDriverWait(drv, timeout).until(
        lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "error"))
    return drv.find_element(By.ID, "status").text


def columns(drv) -> list[dict]:
    return drv.execute_script(
        "return [...document.querySelectorAll('#branches .branch')].map(c => ({title: c.querySelector('.title')"
        ".textContent, text: c.querySelector('.text').textContent, finish: c.querySelector('.finish')"
        ".dataset.finish}));")


def open_demo(drv, srv) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    drv.get(srv.url + "/demo")
    fill(drv, api_key=KEY)  # the change event stores the key and lists the models
    WebDriverWait(drv, 30).until(lambda d: d.find_element(By.ID, "model").text == f"model: {srv.model}")


def test_page_without_the_key_says_so(browser, demo_live):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(demo_live.url + "/demo")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    WebDriverWait(browser, 30).until(lambda d: "API key" in d.find_element(By.ID, "model").text)
    assert send_and_wait(browser) == "cannot list the models (API key?)"
    assert columns(browser) == []  # nothing was sent


def test_one_question_n_samples_stream_side_by_side(browser, demo_live):
    open_demo(browser, demo_live)
    fill(browser, mode="samples", endpoint="chat", n=3, max_tokens=8, temperature=1.0, seed=7,
         prompt="seven small birds")
    status = send_and_wait(browser)
    cols = columns(browser)
    want = demo_live.openai().chat.completions.create(
        model=demo_live.model, messages=[{"role": "user", "content": "seven small birds"}], n=3, max_tokens=8,
        temperature=1.0, seed=7)
    assert status.startswith(f"done: {want.usage.completion_tokens} tokens in"), status  # from the usage chunk
    assert [c["text"] for c in cols] == [c.message.content for c in want.choices]
    assert [c["finish"] for c in cols] == [c.finish_reason for c in want.choices]
    assert len({c["text"] for c in cols}) == 3  # choice i samples with seed + i


def test_several_questions_are_concurrent_requests(browser, demo_live):
    open_demo(browser, demo_live)
    questions = ["the quick brown fox", "a lazy dog", "seven small birds"]
    fill(browser, mode="questions", endpoint="completion", max_tokens=6, temperature=0, seed="",
         prompt="\n".join(questions))
    assert send_and_wait(browser).startswith("done"), browser.find_element("id", "status").text
    cols = columns(browser)
    client = demo_live.openai()
    alone = [client.completions.create(model=demo_live.model, prompt=q, max_tokens=6, temperature=0).choices[0]
             for q in questions]
    assert [c["title"] for c in cols] == questions
    assert [c["text"] for c in cols] == [a.text for a in alone]  # greedy: exactly what each returns alone
    assert all(c["finish"] in ("stop", "length") for c in cols)


def test_parallel_branches_of_one_sample(browser, demo_live):
    open_demo(browser, demo_live)
    questions = ["the quick brown fox", "a lazy dog"]
    fill(browser, mode="parallel", endpoint="completion", max_tokens=5, temperature=0, mask="isolated",
         prompt="\n".join(questions))
    assert send_and_wait(browser).startswith("done"), browser.find_element("id", "status").text
    cols = columns(browser)
    r = demo_live.post("/v1/completions", json={"model": demo_live.model, "prompt": "", "max_tokens": 5,
                                                "temperature": 0, "parallel": {"branches": questions,
                                                                               "mask": "isolated"}})
    assert r.status_code == 200, r.text
    assert [c["text"] for c in cols] == [c["text"] for c in sorted(r.json()["choices"], key=lambda c: c["index"])]
