"""Step 9: the box's sticker, in French, for the tenant: PNG and PDF.

It shows the serial, the Wi-Fi network name and key, a QR code that joins the
Wi-Fi (`WIFI:T:WPA;S:<ssid>;P:<key>;;`, which phone cameras understand), and
the support contact. The Wi-Fi key is printed here on purpose: the sticker is
the one place it belongs (nowhere else: not the ledger, logs or reports).

Size: 100 x 62 mm at 300 dpi (a common label-printer roll); the PDF has the
same physical size.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

DPI = 300
WIDTH_MM, HEIGHT_MM = 100, 62
DEFAULT_SUPPORT = "Assistance : votre association de quartier"


def mm(v: float) -> int:
    return round(v / 25.4 * DPI)


@dataclass
class LabelFiles:
    png: Path
    pdf: Path

    def as_dict(self) -> dict:
        return {"png": str(self.png), "pdf": str(self.pdf)}


def _esc(s: str) -> str:
    for ch in '\\;,":':
        s = s.replace(ch, "\\" + ch)
    return s


def wifi_qr_text(ssid: str, key: str) -> str:
    """The Wi-Fi join string (ZXing's WIFI: format), with \\ ; , " and :
    escaped by a backslash."""
    return f"WIFI:T:WPA;S:{_esc(ssid)};P:{_esc(key)};;"


def _font(size_px: int, bold: bool = False):
    import matplotlib
    from PIL import ImageFont
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    # matplotlib ships DejaVu: the same font on every bench PC (Linux, macOS, Windows)
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size_px)


def _qr_image(text: str, size_px: int):
    import segno
    from PIL import Image
    qr = segno.make(text, error="m", micro=False)
    modules = qr.symbol_size(scale=1, border=4)[0]
    buf = io.BytesIO()
    qr.save(buf, kind="png", scale=max(1, size_px // modules), border=4)
    buf.seek(0)
    img = Image.open(buf).convert("L")
    return img.resize((size_px, size_px), Image.NEAREST)


def _fit(draw, text: str, font_size: int, max_w: int, bold: bool = False):
    while font_size > 10:
        f = _font(font_size, bold)
        if draw.textlength(text, font=f) <= max_w:
            return f
        font_size -= 2
    return _font(font_size, bold)


def render(serial: str, ssid: str, key: str, support: str | None = None, operator: str = "homebox"):
    """The label as a Pillow image (grayscale, 300 dpi)."""
    from PIL import Image, ImageDraw
    w, h = mm(WIDTH_MM), mm(HEIGHT_MM)
    img = Image.new("L", (w, h), 255)
    d = ImageDraw.Draw(img)
    margin = mm(3)
    qr_size = mm(36)
    qr = _qr_image(wifi_qr_text(ssid, key), qr_size)
    img.paste(qr, (w - margin - qr_size, margin))
    text_w = w - 3 * margin - qr_size
    x, y = margin, margin
    d.text((x, y), operator, font=_fit(d, operator, mm(6.5), text_w, True), fill=0)
    y += mm(8.5)
    d.text((x, y), "Numéro de série", font=_font(mm(2.8)), fill=0)
    y += mm(3.6)
    d.text((x, y), serial, font=_fit(d, serial, mm(5), text_w, True), fill=0)
    y += mm(7)
    d.text((x, y), "Réseau Wi-Fi", font=_font(mm(2.8)), fill=0)
    y += mm(3.6)
    d.text((x, y), ssid, font=_fit(d, ssid, mm(4.4), text_w, True), fill=0)
    y += mm(6.2)
    d.text((x, y), "Clé Wi-Fi", font=_font(mm(2.8)), fill=0)
    y += mm(3.6)
    d.text((x, y), key, font=_fit(d, key, mm(4.4), text_w, True), fill=0)
    # under the QR code
    cap = "Scannez pour vous connecter"
    d.text((w - margin - qr_size // 2, margin + qr_size + mm(0.5)), cap,
           font=_fit(d, cap, mm(2.6), qr_size, False), fill=0, anchor="mt")
    # the bottom band: support contact
    band = h - mm(10)
    d.line([(margin, band), (w - margin, band)], fill=0, width=max(1, mm(0.3)))
    sup = support or DEFAULT_SUPPORT
    d.text((margin, band + mm(1.5)), sup, font=_fit(d, sup, mm(3.2), w - 2 * margin), fill=0)
    foot = "Gardez cette étiquette : elle sert au dépannage."
    d.text((margin, band + mm(5.5)), foot, font=_fit(d, foot, mm(2.4), w - 2 * margin), fill=0)
    return img


def make(out_dir: Path, serial: str, ssid: str, key: str, support: str | None = None,
         operator: str = "homebox") -> LabelFiles:
    """Write <out_dir>/<serial>.png and .pdf."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    img = render(serial, ssid, key, support, operator)
    png, pdf = out_dir / f"{serial}.png", out_dir / f"{serial}.pdf"
    img.save(png, "PNG", dpi=(DPI, DPI))
    img.convert("RGB").save(pdf, "PDF", resolution=DPI, title=f"{operator} {serial}")
    return LabelFiles(png, pdf)
