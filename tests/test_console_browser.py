"""The web console in a real browser: Debian's chromium driven by Playwright
(no browser download), French and English, a support agent's path (sign in,
search a box, its page, the alarms), with screenshots checked."""
from __future__ import annotations

import io
import os
import time

import pytest

from backend import accounts, inventory
from backend.api import Api, serve
from backend.store import Store
from tests.test_status_report import populate

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def console(tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        msg = "Debian's chromium is not installed (make setup installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (mandatory under CI=true)")
        pytest.skip(msg)
    pytest.importorskip("playwright.sync_api")
    url = f"sqlite:///{tmp_path}/backend.db"
    st = Store(url)
    populate(st, now=int(time.time()) // 3600 * 3600)
    accounts.add(st, "sam", "viewer", "sam-support-42", author="test")
    accounts.add(st, "olga", "operator", "olga-operator-42", author="test")
    inventory.import_rows(st, [{"box": "nantes-002"}, {"box": "HB-000900", "tested_at": time.time() - 30 * 86400}])
    inventory.set_place(st, "nantes-002", address="3 allée des Lilas, Nantes", building="Tour B")
    inventory.set_place(st, "HB-000900", address="5 rue de Kerourien, Brest")
    st.close()
    api = Api(url)
    srv = serve(api, "127.0.0.1", 0)
    host, port = srv.server_address[:2]
    yield f"http://{host}:{port}"
    srv.shutdown()
    srv.server_close()
    api.close()


def _not_blank(png: bytes) -> None:
    from PIL import Image
    im = Image.open(io.BytesIO(png)).convert("L")
    assert im.size[0] >= 360 and im.size[1] >= 300
    lo, hi = im.getextrema()
    assert hi - lo > 100, "the screenshot is blank"


def test_support_agent_path_in_chromium(console, tmp_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # a phone-sized window, French by default
            page = browser.new_page(viewport={"width": 390, "height": 844}, locale="fr-FR")
            page.set_default_timeout(10_000)
            page.goto(console + "/boxes/nantes-002")
            assert page.url.endswith("/login")
            assert page.locator("html").get_attribute("lang") == "fr"
            page.get_by_label("Identifiant").fill("sam")
            page.get_by_label("Mot de passe").fill("not the password")
            page.get_by_role("button", name="Connexion").click()
            assert page.get_by_role("alert").inner_text().startswith("Identifiant ou mot de passe")
            page.get_by_label("Identifiant").fill("sam")
            page.get_by_label("Mot de passe").fill("sam-support-42")
            page.get_by_role("button", name="Connexion").click()
            page.wait_for_url(console + "/")
            shot = page.screenshot(path=str(tmp_path / "search-fr.png"), full_page=True)
            _not_blank(shot)
            # search by serial, open the box
            page.get_by_label("Numéro de série, adresse ou bâtiment").fill("nantes-00")
            page.get_by_role("button", name="Rechercher").click()
            rows = page.locator("tbody tr")
            assert rows.count() == 3
            _not_blank(page.screenshot(path=str(tmp_path / "results-fr.png"), full_page=True))
            page.get_by_role("link", name="nantes-002").click()
            assert page.get_by_role("heading", level=1).inner_text() == "Box nantes-002"
            assert "Tour B · 3 allée des Lilas, Nantes" in page.locator("main").inner_text()
            assert "slow_line" in page.locator("main").inner_text()
            assert "de l'offre" in page.locator("main").inner_text()
            assert page.locator("h2", has_text="Couverture Wi-Fi").count() == 1
            assert "consentement" in page.locator("main").inner_text()     # no consent recorded
            _not_blank(page.screenshot(path=str(tmp_path / "box-fr.png"), full_page=True))
            # by address: a box the bench provisioned that never connected
            page.get_by_role("link", name="Rechercher une box").click()
            page.get_by_label("Numéro de série, adresse ou bâtiment").fill("Kerourien")
            page.get_by_role("button", name="Rechercher").click()
            assert page.locator("tbody tr").count() == 1
            assert "jamais connectée" in page.locator("tbody").inner_text()
            page.locator("tbody a").click()
            assert "never_connected" in page.locator("main").inner_text()
            # English, kept for the next pages
            page.get_by_role("link", name="English").click()
            assert page.locator("html").get_attribute("lang") == "en"
            assert page.get_by_role("heading", level=2, name="Line speed").count() == 1
            page.get_by_role("link", name="Alarms").click()
            text = page.locator("main").inner_text()
            assert page.get_by_role("heading", level=1).inner_text() == "Alarms"
            assert "slow_line" in text and "warning" in text
            assert page.get_by_role("button", name="Acknowledge slow_line").count() == 0    # a viewer
            _not_blank(page.screenshot(path=str(tmp_path / "alarms-en.png"), full_page=True))
            page.get_by_role("link", name="Campaigns").click()
            assert "Nothing found." in page.locator("main").inner_text()
            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url(console + "/login")
            page.goto(console + "/alarms")
            assert page.url.endswith("/login")
            assert text
            # an operator acknowledges the slow line from the alarms list
            page.get_by_label("Account").fill("olga")
            page.get_by_label("Password").fill("olga-operator-42")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(console + "/")
            page.get_by_role("link", name="Alarms").click()
            page.get_by_role("button", name="Acknowledge slow_line").click()
            page.wait_for_url(console + "/alarms")
            assert "acknowledged by olga" in page.locator("tbody").inner_text()
            assert page.get_by_role("button", name="Acknowledge slow_line").count() == 0
            _not_blank(page.screenshot(path=str(tmp_path / "alarms-acked-en.png"), full_page=True))
        finally:
            browser.close()
