"""The demo as a standalone web app: `hyperclip_nb demo` serves it with Voilà on localhost, and a real headless browser
(Debian's Chromium and ChromeDriver, which `.ci/run` installs) types a question, presses Answer and reads the result."""
import os, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
DRIVER = shutil.which('chromedriver')

def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture
def app_url(tmp_path):
    port = _free_port()
    env = os.environ | {'HYPERCLIP_NB_CACHE': os.environ.get('HYPERCLIP_NB_CACHE', str(tmp_path/'cache')), 'MPLBACKEND': 'Agg'}
    log = open(tmp_path/'voila.log', 'w')
    p = subprocess.Popen([sys.executable, '-c', 'from hyperclip_nb.cli import main; raise SystemExit(main())',
                          'demo', '--config', 'tiny', '--port', str(port)],
                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f'http://127.0.0.1:{port}/'
    try:
        for _ in range(120):                                   # the server itself starts in seconds
            try: urllib.request.urlopen(url, timeout=2); break
            except OSError: time.sleep(0.5)
            assert p.poll() is None, (tmp_path/'voila.log').read_text()
        else: pytest.fail('the demo server did not answer in 60 s:\n' + (tmp_path/'voila.log').read_text())
        yield url, tmp_path/'voila.log'
    finally:
        p.terminate()
        try: p.wait(10)
        except subprocess.TimeoutExpired: p.kill()

def test_demo_app_in_a_browser(app_url):
    assert CHROMIUM and DRIVER, "the browser test needs Chromium and ChromeDriver: apt-get install chromium chromium-driver"
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    url, log = app_url
    opts = Options(); opts.binary_location = CHROMIUM
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--window-size=1200,2000'): opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        drv.get(url)
        wait = WebDriverWait(drv, 240)                         # the page trains the tiny models on first open
        box = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type='text']"))[0]
        box.clear(); box.send_keys('where is the red circle?')
        drv.find_element(By.XPATH, "//button[contains(., 'Answer')]").click()
        text = wait.until(lambda d: next((e.text for e in d.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output')
                                          if 'images:' in e.text), None))
        assert "'where is the red circle?'" in text, text
        for m in ('HyperLDM', 'HyperCLIP', 'conditional multitask', 'zero-shot CLIP'): assert m in text, text
        assert '±' in text and 'accuracy' in text, text
        two = lambda d: (lambda i: i if len(i) >= 2 else None)(d.find_elements(By.CSS_SELECTOR, '.widget-output img'))
        imgs = wait.until(two)                                   # the comparison and the grid, both rendered
        assert len(imgs) >= 2 and all(i.size['width'] > 100 for i in imgs[:2]), [i.size for i in imgs]   # comparison and grid
    except Exception:
        print(log.read_text()[-3000:]); raise
    finally: drv.quit()
