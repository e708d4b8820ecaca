"""Regenerate assets/demo_dataset: small drawn images (shapes on coloured grounds) with captions.

Run: python assets/make_demo_dataset.py
"""

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).parent / "demo_dataset"
COLOURS = {"red": (220, 50, 47), "blue": (38, 139, 210), "green": (133, 153, 0), "yellow": (237, 200, 40),
           "white": (245, 245, 240), "black": (20, 20, 24), "purple": (108, 113, 196), "orange": (203, 75, 22)}
ITEMS = [  # (file, size, shape, shape colour, background colour)
    ("circle_red.png", (64, 64), "circle", "red", "blue"),
    ("square_yellow.png", (64, 64), "square", "yellow", "black"),
    ("triangle_green.jpg", (96, 64), "triangle", "green", "white"),
    ("circle_white.jpg", (64, 96), "circle", "white", "purple"),
    ("square_orange.png", (80, 64), "square", "orange", "blue"),
    ("triangle_red.png", (64, 80), "triangle", "red", "yellow"),
    ("circle_black.jpg", (72, 72), "circle", "black", "green"),
    ("square_purple.png", (96, 96), "square", "purple", "white"),
]


def draw(size, shape, fg, bg) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, COLOURS[bg])
    d = ImageDraw.Draw(img)
    box = (w * 0.2, h * 0.2, w * 0.8, h * 0.8)
    if shape == "circle":
        d.ellipse(box, fill=COLOURS[fg])
    elif shape == "square":
        d.rectangle(box, fill=COLOURS[fg])
    else:
        d.polygon([(w * 0.5, h * 0.15), (w * 0.85, h * 0.85), (w * 0.15, h * 0.85)], fill=COLOURS[fg])
    return img


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, size, shape, fg, bg in ITEMS:
        img = draw(size, shape, fg, bg)
        path = OUT / name
        img.save(path, quality=92) if path.suffix == ".jpg" else img.save(path, optimize=True)
        path.with_suffix(".txt").write_text(f"a {fg} {shape} on a {bg} background, flat, simple\n")


if __name__ == "__main__":
    main()
