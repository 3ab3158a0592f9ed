"""The camera page (`hpe_jax/serving/static`) in a real headless Chromium
with its fake camera, against the real server (`python -m hpe_jax.serve`)
on a tiny exported keypoint model: frames make the round trip over the
WebSocket, results are drawn, the counters show numbers, and a token
given in the page's URL reaches every request the page makes."""

import json
import pathlib

import pytest

from conftest import http_status
from conftest import Server

CHROMIUM = pathlib.Path('/usr/bin/chromium')
CHROMEDRIVER = pathlib.Path('/usr/bin/chromedriver')

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f'needs Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}; '
    'Debian: apt-get install chromium chromium-driver)')
webdriver = pytest.importorskip(
    'selenium.webdriver', reason='needs selenium (pip install selenium)')
from selenium.webdriver.chrome.service import Service as DriverService  # pylint: disable=g-import-not-at-top,wrong-import-position
from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top,wrong-import-position

# The page must be answering this many frames within PAGE_WAIT_S seconds.
MIN_FRAMES = 5
PAGE_WAIT_S = 60


@pytest.fixture
def serve(tiny_export, tmp_path):
  """Starts the server on the tiny export with extra flags; returns its
  base URL; every server started is stopped at the end of the test."""
  servers = []

  def start(*flags: str) -> str:
    servers.append(Server(tiny_export, *flags, log_dir=tmp_path))
    return servers[-1].url

  yield start
  for server in servers:
    server.stop()


@pytest.fixture
def browser():
  """Headless Chromium whose camera is Chromium's built-in test pattern,
  given to pages without asking."""
  options = webdriver.ChromeOptions()
  options.binary_location = str(CHROMIUM)
  for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage',
              '--disable-gpu', '--use-fake-device-for-media-stream',
              '--use-fake-ui-for-media-stream'):
    options.add_argument(arg)
  options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
  driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)),
                            options=options)
  yield driver
  driver.quit()


def _wait_for_frames(driver) -> dict:
  """The page's hpeStats once MIN_FRAMES frames were answered and drawn
  (or an error was shown, or the wait ran out)."""
  def stats(d):
    s = d.execute_script('return window.hpeStats || null')
    done = s and (s['lastError'] or (s['frames'] >= MIN_FRAMES and
                                     s['drawnFrames'] >= MIN_FRAMES))
    return s if done else False
  try:
    return WebDriverWait(driver, PAGE_WAIT_S, poll_frequency=0.25).until(
        stats)
  except Exception:  # pylint: disable=broad-except
    return driver.execute_script('return window.hpeStats || null')


def _check_page(driver):
  """Frames answered and drawn without an error, numbers in the counters
  and the camera's picture on the canvas."""
  stats = _wait_for_frames(driver)
  console = driver.get_log('browser')
  why = (f'hpeStats {stats}; status '
         f'{driver.find_element("id", "status").text!r}; console '
         f'{json.dumps(console, indent=1)}')
  assert stats is not None, why
  assert stats['lastError'] is None, why
  assert stats['frames'] >= MIN_FRAMES, why
  assert stats['drawnFrames'] >= MIN_FRAMES, why
  # The tiny model is top-down, and the server's default box is the whole
  # frame: one person, whatever the picture.
  assert stats['people'] == 1, why
  assert not [e for e in console if e['level'] == 'SEVERE'], why
  fps = float(driver.find_element('id', 'fps').text)
  latency = float(driver.find_element('id', 'latency').text)
  assert fps > 0 and latency > 0, why
  assert int(driver.find_element('id', 'frames').text) >= MIN_FRAMES, why
  # The canvas starts transparent black; the fake camera's picture is mostly
  # green, with moving shapes and a clock.
  pixels = driver.execute_script("""
    const c = document.getElementById('view');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let samples = 0, lit = 0;
    const colours = new Set();
    for (let i = 0; i < d.length; i += 4 * 101) {
      samples++;
      if (d[i] + d[i + 1] + d[i + 2] > 30) lit++;
      colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    }
    return {width: c.width, height: c.height, samples, lit,
            colours: colours.size};
  """)
  assert pixels['width'] > 0 and pixels['height'] > 0, pixels
  assert pixels['lit'] > pixels['samples'] // 2, pixels
  assert pixels['colours'] > 10, pixels


def test_camera_frames_round_trip_and_are_drawn(serve, browser):
  base = serve()
  browser.get(base + '/')
  _check_page(browser)


def test_token_in_the_page_url_reaches_every_request(serve, browser):
  base = serve('--token=secret')
  assert http_status(base + '/') == 401
  assert http_status(base + '/?token=wrong') == 401
  browser.get(base + '/?token=secret')
  _check_page(browser)
