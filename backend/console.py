"""The web console: server-rendered pages in French and English for a support
agent on the phone with a tenant (search a box, its coverage, speed against the
plan, consumption, alarms and documents), the alarms list and the campaigns.

Pages: /login, /logout (POST), / (search), /boxes/{id}, /alarms, /campaigns.
Language: ?lang=fr|en (kept in a cookie), else the browser's Accept-Language,
else French. Sessions: an HttpOnly, SameSite=Strict cookie holding a session
token of backend/accounts.py (SESSION_S); forms that change something carry a
CSRF field derived from it. No script; plain HTML with labels, a skip link and
tables with headers, so a screen reader and a phone both work.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, quote

from backend import accounts, campaign
from backend.readings import band_shares, speed_ratio

COOKIE = "hb_session"
LANG_COOKIE = "hb_lang"

T = {
    "title": ("Console opérateur homebox", "homebox operator console"),
    "login": ("Connexion", "Sign in"),
    "name": ("Identifiant", "Account"),
    "password": ("Mot de passe", "Password"),
    "bad_login": ("Identifiant ou mot de passe incorrect.", "Wrong account or password."),
    "logout": ("Déconnexion", "Sign out"),
    "search": ("Rechercher une box", "Find a box"),
    "search_label": ("Numéro de série, adresse ou bâtiment", "Serial number, address or building"),
    "place": ("Lieu", "Place"),
    "never_connected": ("jamais connectée", "never connected"),
    "tag_label": ("Bâtiment ou tour (étiquette)", "Building or tower (tag)"),
    "go": ("Rechercher", "Search"),
    "boxes": ("Box", "Boxes"),
    "box": ("Box", "Box"),
    "state": ("État", "State"),
    "last_seen": ("Vue pour la dernière fois", "Last seen"),
    "alarms": ("Alarmes", "Alarms"),
    "no_alarm": ("Aucune alarme.", "No alarm."),
    "campaigns": ("Campagnes", "Campaigns"),
    "none": ("Aucun résultat.", "Nothing found."),
    "coverage": ("Couverture Wi-Fi par appareil", "Wi-Fi coverage per device"),
    "device": ("Appareil (MAC hachée)", "Device (hashed MAC)"),
    "signal": ("Signal moyen (dBm)", "Average signal (dBm)"),
    "weak": ("Temps en signal faible", "Time with a weak signal"),
    "no_coverage": ("Pas encore de mesure de couverture.", "No coverage report yet."),
    "speed": ("Débit de la ligne", "Line speed"),
    "down": ("Descendant", "Download"),
    "plan": ("Offre", "Plan"),
    "of_plan": ("de l'offre", "of the plan"),
    "no_speed": ("Pas encore de mesure de débit.", "No speed test yet."),
    "client_limited": ("limité par la box, pas par la ligne", "limited by the box, not the line"),
    "consumption": ("Consommation", "Consumption"),
    "no_consent": ("Sans le consentement du foyer, la consommation n'est pas affichée.",
                   "Without the household's consent, consumption is not shown."),
    "electricity": ("Électricité (total, Wh)", "Electricity (total, Wh)"),
    "water": ("Eau (index, litres)", "Water (index, litres)"),
    "rssi_unsupported": ("Ce matériel ne donne pas le signal par appareil.",
                         "This hardware does not give the signal per device."),
    "documents": ("Documents (souhaité / appliqué)", "Documents (desired / applied)"),
    "section": ("Section", "Section"),
    "desired": ("Souhaitée", "Desired"),
    "applied": ("Appliquée", "Applied"),
    "pending": ("en attente", "pending"),
    "up_to_date": ("à jour", "up to date"),
    "code": ("Code", "Code"),
    "detail": ("Détail", "Detail"),
    "skip": ("Aller au contenu", "Skip to content"),
    "online": ("en ligne", "online"), "offline": ("hors ligne", "offline"),
    "unknown": ("inconnu", "unknown"),
    "never": ("jamais", "never"),
    "ago": ("il y a {}", "{} ago"),
    "campaign": ("Campagne", "Campaign"), "progress": ("Avancement", "Progress"),
    "total": ("{} box au total", "{} boxes in all"),
    "prev": ("Précédent", "Previous"), "next": ("Suivant", "Next"), "first": ("Début", "First page"),
    "not_found": ("Page introuvable.", "Page not found."),
    "tags": ("Étiquettes", "Tags"),
    "ack": ("Acquitter", "Acknowledge"),
    "acked_by": ("acquittée par {} {}", "acknowledged by {} {}"),
    "severity": ("Gravité", "Severity"),
    "sev_info": ("info", "info"), "sev_warning": ("avertissement", "warning"), "sev_critical": ("critique", "critical"),
    "raised": ("Levée", "Raised"), "cleared": ("Terminée", "Cleared"),
    "state_active": ("En cours", "Active"), "state_cleared": ("Terminées", "Cleared"),
    "state_all": ("Toutes", "All"),
    "alarm_total": ("{} alarmes", "{} alarms"),
}


def tr(lang: str, key: str) -> str:
    fr, en = T[key]
    return en if lang == "en" else fr


def _cookies(h) -> SimpleCookie:
    c: SimpleCookie = SimpleCookie()
    try:
        c.load(h.headers.get("Cookie") or "")
    except Exception:
        pass
    return c


def _session_token(h) -> str | None:
    m = _cookies(h).get(COOKIE)
    return m.value if m else None


def session_account(h, store):
    return accounts.by_token(store, _session_token(h))


def csrf(token: str) -> str:
    return hmac.new(token.encode(), b"csrf", hashlib.sha256).hexdigest()[:32]


def _lang(h, query) -> tuple[str, str | None]:
    if query.get("lang") in ("fr", "en"):
        return query["lang"], query["lang"]
    m = _cookies(h).get(LANG_COOKIE)
    if m and m.value in ("fr", "en"):
        return m.value, None
    al = (h.headers.get("Accept-Language") or "").lower()
    first = al.split(",")[0].strip()[:2]
    return ("en" if first == "en" else "fr"), None


def _ago(lang: str, t) -> str:
    if t is None:
        return tr(lang, "never")
    s = max(0, time.time() - float(t))
    txt = f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else \
        f"{s / 3600:.0f} h" if s < 172800 else f"{s / 86400:.0f} j" if lang == "fr" else f"{s / 86400:.0f} d"
    return tr(lang, "ago").format(txt)


E = html.escape


def _page(h, lang: str, title: str, body: str, acct=None, code: int = 200, set_lang: str | None = None,
          headers: dict | None = None) -> None:
    nav = ""
    if acct is not None:
        tok = _session_token(h) or ""
        nav = (f'<nav aria-label="menu"><a href="/">{E(tr(lang, "search"))}</a> · '
               f'<a href="/alarms">{E(tr(lang, "alarms"))}</a> · '
               f'<a href="/campaigns">{E(tr(lang, "campaigns"))}</a> · '
               f'<span>{E(acct.name)} ({E(acct.role)})</span> '
               f'<form method="post" action="/logout" class="inline">'
               f'<input type="hidden" name="csrf" value="{csrf(tok)}">'
               f'<button type="submit">{E(tr(lang, "logout"))}</button></form></nav>')
    other = "en" if lang == "fr" else "fr"
    page = f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{E(title)} — homebox</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:0 1rem;color:#111;background:#fff}}
a{{color:#0645ad}} header{{display:flex;justify-content:space-between;align-items:center;flex-wrap:wrap;border-bottom:2px solid #0645ad}}
table{{border-collapse:collapse;width:100%;margin:.5rem 0}} th,td{{text-align:left;padding:.3rem .3rem;border-bottom:1px solid #ccc;overflow-wrap:anywhere}}
.bad{{color:#a00;font-weight:bold}} .ok{{color:#060}} .inline{{display:inline}}
label{{display:block;margin-top:.5rem}} input,button{{font-size:1rem;padding:.3rem}}
.skip{{position:absolute;left:-999px}} .skip:focus{{left:1rem}}
</style></head><body>
<a class="skip" href="#main">{E(tr(lang, "skip"))}</a>
<header><p><strong>{E(tr(lang, "title"))}</strong></p>{nav}
<p><a href="?lang={other}" hreflang="{other}" lang="{other}">{"English" if other == "en" else "Français"}</a></p></header>
<main id="main"><h1>{E(title)}</h1>
{body}
</main></body></html>"""
    hdr = dict(headers or {})
    hdr["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'"
    hdr["X-Frame-Options"] = "DENY"
    if set_lang:
        hdr["Set-Cookie"] = f"{LANG_COOKIE}={set_lang}; Path=/; SameSite=Strict; Max-Age=31536000"
    h._send(code, page.encode(), "text/html; charset=utf-8", hdr)


def _redirect(h, to: str, cookie: str | None = None) -> None:
    hdr = {"Location": to}
    if cookie:
        hdr["Set-Cookie"] = cookie
    h._send(303, b"", "text/plain", hdr)


def _form(h) -> dict:
    raw = h.raw_body.decode("utf-8", "replace")
    return {k: v[-1] for k, v in parse_qs(raw).items()}


def handle(h, store, path: str, query: dict) -> None:
    api = h.api
    lang, set_lang = _lang(h, query)
    secure = "; Secure" if api.secure_cookies else ""
    if path == "/login":
        if h.command == "POST":
            f = _form(h)
            acct = accounts.login(store, f.get("name", ""), f.get("password", ""))
            if acct is not None:
                tok = accounts.new_token(store, acct.name, "console", kind="session", ttl=accounts.SESSION_S)
                accounts.audit(store, acct.name, "login", acct.name, {"via": "console"})
                _redirect(h, "/", f"{COOKIE}={tok}; Path=/; HttpOnly; SameSite=Strict{secure}")
                return
            return _login(h, lang, set_lang, error=True)
        return _login(h, lang, set_lang)
    acct = session_account(h, store)
    if acct is None:
        if h.command == "GET":
            return _redirect(h, "/login")
        return h._send(401, b"sign in first\n", "text/plain")
    if path == "/logout" and h.command == "POST":
        tok = _session_token(h) or ""
        if not hmac.compare_digest(_form(h).get("csrf", ""), csrf(tok)):
            return h._send(403, b"bad form token\n", "text/plain")
        accounts.revoke(store, tok)
        return _redirect(h, "/login", f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}")
    ack = re.fullmatch(r"/alarms/([0-9]{1,18})/ack", path)
    if h.command == "POST" and ack:
        return _ack(h, store, acct, ack.group(1))
    if h.command not in ("GET", "HEAD"):
        return h._send(405, b"method not allowed\n", "text/plain")
    if path == "/":
        return _search(h, lang, set_lang, acct, store, query)
    if path.startswith("/boxes/") and path.count("/") == 2:
        from urllib.parse import unquote
        return _box(h, lang, set_lang, acct, store, unquote(path[len("/boxes/"):]))
    if path == "/alarms":
        return _alarms(h, lang, set_lang, acct, store, query)
    if path == "/campaigns":
        return _campaigns(h, lang, set_lang, acct, store)
    _page(h, lang, tr(lang, "not_found"), "", acct, code=404, set_lang=set_lang)


def _login(h, lang, set_lang, error: bool = False) -> None:
    err = f'<p class="bad" role="alert">{E(tr(lang, "bad_login"))}</p>' if error else ""
    body = f"""{err}<form method="post" action="/login">
<label for="name">{E(tr(lang, "name"))}</label><input id="name" name="name" autocomplete="username" required>
<label for="password">{E(tr(lang, "password"))}</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<p><button type="submit">{E(tr(lang, "login"))}</button></p></form>"""
    _page(h, lang, tr(lang, "login"), body, code=401 if error else 200, set_lang=set_lang)


def _state(lang, st) -> str:
    st = st or "unknown"
    cls = "ok" if st == "online" else "bad" if st == "offline" else ""
    label = tr(lang, st) if st in ("online", "offline", "unknown", "never_connected") else st
    return f'<span class="{cls}">{E(label)}</span>'


def _search(h, lang, set_lang, acct, store, query) -> None:
    from backend.fleetq import HttpError, search_boxes
    q = {k: query[k] for k in ("q", "tag", "alarm", "online", "after") if query.get(k)}
    q["limit"] = "25"
    try:
        res = search_boxes(store, q, h.api.grace)
    except HttpError as e:
        return _page(h, lang, tr(lang, "search"), f"<p class='bad'>{E(e.message)}</p>", acct, 400)
    rows = "".join(
        f'<tr><td><a href="/boxes/{quote(b["box"])}">{E(b["box"])}</a></td><td>{_state(lang, b["state"])}</td>'
        f'<td>{E(" · ".join(x for x in (b["building"], b["address"]) if x))}</td>'
        f'<td>{E(_ago(lang, b["last_seen"]))}</td><td>{b["alarms"] or ""}</td></tr>' for b in res["items"])
    total = f'{res["total"]}{"+" if res["total_capped"] else ""}'
    table = (f'<p>{E(tr(lang, "total").format(total))}</p>'
             + _table(lang, ("box", "state", "place", "last_seen", "alarms"), rows)
             ) if res["items"] else f'<p>{E(tr(lang, "none"))}</p>'
    # keyset paging: the next page starts after this one's last box
    nav = []
    enc = "&".join(f"{k}={quote(v)}" for k, v in q.items() if k not in ("limit", "after"))
    if q.get("after"):
        nav.append(f'<a href="/?{enc}">{E(tr(lang, "first"))}</a>')
    if res["next"]:
        nav.append(f'<a href="/?{enc}&after={quote(res["next"])}">{E(tr(lang, "next"))}</a>')
    body = f"""<form method="get" action="/" role="search">
<label for="q">{E(tr(lang, "search_label"))}</label><input id="q" name="q" value="{E(query.get('q', ''))}">
<label for="tag">{E(tr(lang, "tag_label"))}</label><input id="tag" name="tag" value="{E(query.get('tag', ''))}">
<p><button type="submit">{E(tr(lang, "go"))}</button></p></form>{table}<p>{' · '.join(nav)}</p>"""
    _page(h, lang, tr(lang, "search"), body, acct, set_lang=set_lang)


def _box(h, lang, set_lang, acct, store, box: str) -> None:
    from backend.fleetq import HttpError, box_detail
    try:
        d = box_detail(store, box, h.api.interval, h.api.grace)
    except HttpError:
        return _page(h, lang, tr(lang, "not_found"), "", acct, code=404, set_lang=set_lang)
    latest = d["latest"]
    parts = [f'<p>{E(tr(lang, "state"))}: {_state(lang, d["state"])} · {E(tr(lang, "last_seen"))}: '
             f'{E(_ago(lang, d["last_seen"]))} · fw {E(str(d.get("fw") or "?"))}'
             + (f' · {E(tr(lang, "tags"))}: {E(", ".join(d["tags"]))}' if d["tags"] else "") + "</p>"]
    inv = d.get("inventory") or {}
    if inv.get("address") or inv.get("building"):
        parts.append(f'<p>{E(tr(lang, "place"))}: {E(" · ".join(x for x in (inv.get("building"), inv.get("address")) if x))}</p>')
    # alarms
    parts.append(f'<h2>{E(tr(lang, "alarms"))}</h2>')
    if d["alarms"]:
        back = f"/boxes/{quote(box)}"
        parts.append("<ul>" + "".join(f'<li><span class="bad">{E(a["code"])}</span>: {E(a["detail"])} '
                                      f'{_ack_form(h, lang, acct, a, back)}</li>' for a in d["alarms"]) + "</ul>")
    else:
        parts.append(f'<p class="ok">{E(tr(lang, "no_alarm"))}</p>')
    # coverage
    parts.append(f'<h2>{E(tr(lang, "coverage"))}</h2>')
    cov = (latest.get("coverage") or {}).get("data") or {}
    stations = cov.get("stations") if isinstance(cov.get("stations"), list) else []
    if cov.get("rssi") == "unsupported":
        parts.append(f'<p>{E(tr(lang, "rssi_unsupported"))}</p>')
    if stations:
        rows = []
        for s in stations:
            if not isinstance(s, dict):
                continue
            sig = s.get("signal_strength") if isinstance(s.get("signal_strength"), dict) else {}
            avg = sig.get("avg")
            shares = band_shares({"stations": [s]}) or {}
            weak = (shares.get("weak", 0) or 0) + (shares.get("unusable", 0) or 0)
            rows.append(f'<tr><td><code>{E(str(s.get("id", "?"))[:16])}</code></td>'
                        f'<td>{E(str(avg if avg is not None else "?"))}</td>'
                        f'<td class="{"bad" if weak > 0.25 else ""}">{weak:.0%}</td></tr>')
        parts.append(_table(lang, ("device", "signal", "weak"), "".join(rows)))
    else:
        parts.append(f'<p>{E(tr(lang, "no_coverage"))}</p>')
    # speed
    parts.append(f'<h2>{E(tr(lang, "speed"))}</h2>')
    sp = (latest.get("speed") or {}).get("data")
    r = speed_ratio(sp)
    if isinstance(sp, dict):
        down = sp.get("down") if isinstance(sp.get("down"), dict) else {}
        dn = _mbps(down.get("goodput_bps"))
        plan = _mbps(sp.get("plan_down_bps"))
        txt = f'{E(tr(lang, "down"))}: {E(str(dn if dn is not None else "?"))} Mbps · ' \
              f'{E(tr(lang, "plan"))}: {E(str(plan if plan is not None else "?"))} Mbps'
        if r is not None:
            txt += f' · <strong class="{"ok" if r >= 0.8 else "bad"}">{r:.0%} {E(tr(lang, "of_plan"))}</strong>'
        if sp.get("client_limited"):
            txt += f' ({E(tr(lang, "client_limited"))})'
        parts.append(f"<p>{txt}</p>")
    else:
        parts.append(f'<p>{E(tr(lang, "no_speed"))}</p>')
    # consumption, with the household's consent only (options.consent.detailed_consumption)
    parts.append(f'<h2>{E(tr(lang, "consumption"))}</h2>')
    opts = next((x.get("document") or {} for x in d["desired_documents"] if x["section"] == "options"), {})
    cons = (latest.get("consumption") or {}).get("data") or {}
    if not _consent(opts):
        parts.append(f'<p>{E(tr(lang, "no_consent"))}</p>')
    else:
        elec = cons.get("elec") if isinstance(cons.get("elec"), dict) else {}
        water = cons.get("water") if isinstance(cons.get("water"), dict) else {}
        ev = elec.get("wh_total")
        wv = water.get("index_l")
        parts.append(f'<p>{E(tr(lang, "electricity"))}: {E(str(ev if ev is not None else "?"))} · '
                     f'{E(tr(lang, "water"))}: {E(str(wv if wv is not None else "?"))}</p>')
    # documents
    parts.append(f'<h2>{E(tr(lang, "documents"))}</h2>')
    rep = {x["section"]: x for x in d["reported_documents"]}
    rows = []
    for x in d["desired_documents"]:
        have = (rep.get(x["section"]) or {}).get("version")
        ok = isinstance(have, int) and have >= x["version"]
        rows.append(f'<tr><td>{E(x["section"])}</td><td>v{x["version"]}</td><td>{E(str(have or "—"))}</td>'
                    f'<td class="{"ok" if ok else "bad"}">{E(tr(lang, "up_to_date" if ok else "pending"))}</td></tr>')
    parts.append(_table(lang, ("section", "desired", "applied", "state"), "".join(rows)))
    _page(h, lang, f'{tr(lang, "box")} {box}', "\n".join(parts), acct, set_lang=set_lang)


def _table(lang: str, heads, rows: str) -> str:
    """A table with a header cell per key of `heads` (translated) over the <tr> rows `rows`."""
    th = "".join(f'<th scope="col">{E(tr(lang, k))}</th>' for k in heads)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>"


def _consent(opts: dict) -> bool:
    """The household's consent, as the operator recorded it in the options document."""
    c = opts.get("consent")
    return isinstance(c, dict) and c.get("detailed_consumption") is True


def _mbps(bps):
    return round(bps / 1e6, 2) if isinstance(bps, (int, float)) and not isinstance(bps, bool) else None


def _ack_form(h, lang, acct, a: dict, back: str) -> str:
    """The acknowledgement: who and when, or (operator role) a button."""
    if a.get("acknowledged_by"):
        return E(tr(lang, "acked_by").format(a["acknowledged_by"], _ago(lang, a["acknowledged_at"])))
    if not acct.can("operator") or a.get("id") is None:
        return ""
    tok = _session_token(h) or ""
    return (f'<form method="post" action="/alarms/{a["id"]}/ack" class="inline">'
            f'<input type="hidden" name="csrf" value="{csrf(tok)}"><input type="hidden" name="back" value="{E(back)}">'
            f'<button type="submit" aria-label="{E(tr(lang, "ack"))} {E(a["code"])}">{E(tr(lang, "ack"))}</button>'
            f'</form>')


def _alarms(h, lang, set_lang, acct, store, query) -> None:
    from backend import alarms
    q = {k: query[k] for k in ("state", "kind", "severity", "cursor") if query.get(k)}
    q["limit"] = "50"
    try:
        res = alarms.list_alarms(store, q)
    except alarms.AlarmError as e:
        return _page(h, lang, tr(lang, "alarms"), f"<p class='bad'>{E(str(e))}</p>", acct, 400)
    state = q.get("state", "active")
    tabs = " · ".join(f'<a href="/alarms?state={s}"' + (' aria-current="page"' if s == state else "")
                      + f'>{E(tr(lang, "state_" + s))}</a>' for s in ("active", "cleared", "all"))
    body = f"<p>{tabs}</p>"
    if res["items"]:
        rows = "".join(
            f'<tr><td><a href="/boxes/{quote(a["box"])}">{E(a["box"])}</a></td><td>{E(a["code"])}</td>'
            f'<td class="{"bad" if a["severity"] == "critical" else ""}">{E(tr(lang, "sev_" + a["severity"]))}</td>'
            f'<td>{E(a["detail"])}</td><td>{E(_ago(lang, a["raised_at"]))}</td>'
            f'<td>{E(_ago(lang, a["cleared_at"])) if a["cleared_at"] else ""}</td>'
            f'<td>{_ack_form(h, lang, acct, a, "/alarms")}</td></tr>' for a in res["items"])
        total = f'{res["total"]}{"+" if res["total_capped"] else ""}'
        body += (f'<p>{E(tr(lang, "alarm_total").format(total))}</p>'
                 + _table(lang, ("box", "code", "severity", "detail", "raised", "cleared", "ack"), rows))
        if res["next"]:
            extra = "".join(f"&{k}={quote(v)}" for k, v in q.items() if k in ("state", "kind", "severity"))
            body += f'<p><a href="/alarms?cursor={quote(res["next"])}{extra}">{E(tr(lang, "next"))}</a></p>'
    else:
        body += f'<p class="ok">{E(tr(lang, "no_alarm"))}</p>'
    _page(h, lang, tr(lang, "alarms"), body, acct, set_lang=set_lang)


def _ack(h, store, acct, alarm_id: str) -> None:
    """POST /alarms/{id}/ack from the console: operator role, CSRF field, audited."""
    from backend import alarms
    f = _form(h)
    if not hmac.compare_digest(f.get("csrf", ""), csrf(_session_token(h) or "")):
        return h._send(403, b"bad form token\n", "text/plain")
    if not acct.can("operator"):
        return h._send(403, b"operator role needed\n", "text/plain")
    try:
        a = alarms.acknowledge(store, int(alarm_id), acct.name)
    except alarms.AlarmError as e:
        return h._send(e.code, (str(e) + "\n").encode(), "text/plain")
    accounts.audit(store, acct.name, "alarm.ack", str(a["id"]),
                   {"box": a["box"], "kind": a["kind"], "raised_at": a["raised_at"], "via": "console"})
    back = f.get("back", "/alarms")
    _redirect(h, back if back.startswith("/") and not back.startswith("//") else "/alarms")


def _campaigns(h, lang, set_lang, acct, store) -> None:
    items = campaign.list_campaigns(store)
    if items:
        rows = "".join(
            f'<tr><td>{E(c["id"])}</td><td>{E(c["section"])}</td><td>{E(c["state"])}</td>'
            f'<td>{E(json.dumps({k: v for k, v in c["counts"].items() if v}))}</td></tr>' for c in items)
        body = _table(lang, ("campaign", "section", "state", "progress"), rows)
    else:
        body = f'<p>{E(tr(lang, "none"))}</p>'
    _page(h, lang, tr(lang, "campaigns"), body, acct, set_lang=set_lang)
