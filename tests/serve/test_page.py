"""The analyst page in headless Chromium: it loads, a classification round-trips, an XSS payload stays inert."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_page_classifies_and_renders_payloads_inert(make_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server = make_server()
    browser.get(server.url + "/")
    assert "cybersecqwen" in browser.title
    payload = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> SQL commands built from login input'
    browser.find_element(By.ID, "input").send_keys(payload)
    Select(browser.find_element(By.ID, "task")).select_by_value("cwe")
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, 120).until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "done"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#result table tr")
    assert len(rows) == 4  # header + 3 candidates
    link = rows[1].find_element(By.TAG_NAME, "a")
    assert link.text.startswith("CWE-") and link.get_attribute("href").startswith("https://cwe.mitre.org/data/definitions/")
    assert browser.execute_script("return window.__xss === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "#result img, #result script")

    # A question whose text holds markup: the answer box shows text, the markup never becomes elements.
    Select(browser.find_element(By.ID, "task")).select_by_value("ask")
    box = browser.find_element(By.ID, "input")
    box.clear()
    box.send_keys('Repeat exactly: <img src=x onerror="window.__xss=3">')
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.ID, "answer"))
    assert browser.execute_script("return window.__xss === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "#result img")

    # The Analyze tab: an advisory with markup and a defanged URL; every section renders as text, no link to the URL.
    Select(browser.find_element(By.ID, "task")).select_by_value("advisory")
    box = browser.find_element(By.ID, "input")
    box.clear()
    box.send_keys('SQL injection (CVE-2024-12345) lets remote attackers run SQL commands. APT28 used '
                  'hxxps://evil-cdn[.]com/x <img src=x onerror="window.__xss=4"> from 203.0.113.7.')
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, 180).until(lambda d: d.find_elements(By.ID, "summary"))
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#result h2")]
    assert "CVEs (1)" in headings and any(h.startswith("Indicators (") and not h.endswith("(0)") for h in headings)
    assert "https://evil-cdn.com/x" in browser.find_element(By.ID, "result").text
    assert not [a for a in browser.find_elements(By.CSS_SELECTOR, "#result a") if "evil" in (a.get_attribute("href") or "")]
    assert browser.execute_script("return window.__xss === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "#result img")
