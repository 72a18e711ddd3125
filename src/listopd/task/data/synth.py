"""The embedded default dataset: a synthetic fashion shop, deterministic by seed, no files needed.

Catalogue. Each item has a category (dress, sneakers, jeans, hoodie, handbag, ...), a colour, a style (casual,
formal, sporty, boho, ...), an invented brand, a price band (the brand's: budget / mid / premium / luxury) and a
material, plus one optional noise descriptor ("Floral", "Slim Fit", ...). Its title reads like a shop title:

    "Lumera Women's Floral Wrap Midi Dress - Navy Blue, Casual, Rayon"

Every attribute that drives preference except the price band is spelled out in the title; the price band is
carried by the brand (each brand sits in one band). Titles are unique, ~40-90 characters (median ~62), so a K=8 task
with 5 history items fits in about 300 prompt tokens.

Users. Each user likes 2-4 categories, 2-3 colours, 1-2 styles, 2-3 brands and one price band (adjacent bands
half as much). Latent utility of an item for a user:

    u = 1.0·cat + 0.7·style + 0.6·colour + 0.5·brand + 0.5·price + N(0, 0.1)     (per user-item noise)

History: items drawn without replacement from softmax(u / 0.2) mixed with 15% uniform noise.

Tasks (next-item). Context = the user's most recent history titles (chronological, `min_history`..`history_len`
of them). Candidates = K items: the user's next purchase (drawn like the history), 2 "near" items drawn from the
softer softmax(u / 0.5), and K-3 uniform items; none from the user's whole purchase sequence; order shuffled.
Relevance is graded 0-3 from the user's utility quantile over the whole catalogue:
top 3% -> 3, top 10% -> 2, top 30% -> 1, else 0. So the held-out purchase is usually but not always the best;
rarely (~0.15% of tasks at the defaults) every candidate is 0. Measured at the defaults: an attribute-word-
overlap ranking gets NDCG@1 0.62 against 0.26 for a random order (tests/test_synth.py checks a smaller shop).

Splits. Users (not tasks) are split: a seeded permutation puts `test_frac` of users in test, `validation_frac`
in validation, the rest in train; every task of a user goes to that user's split, so no user leaks across splits.
Items are shared by all splits (the catalogue is the shop).

Candidate ids are the letters "A", "B", ... in candidate order (K <= 26); `letter_ids` and `history_context`
are shared with the Amazon loader so real and synthetic contexts read the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from listopd.util.errors import DomainError
from listopd.task.tasks import Candidate, Task

# category -> (product nouns, audiences, materials, styles the category comes in)
CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "dress": (("Wrap Midi Dress", "Maxi Dress", "Shift Dress", "Slip Dress"), ("Women's",),
              ("Rayon", "Cotton", "Linen", "Chiffon", "Satin"), ("casual", "formal", "boho", "vintage", "minimalist")),
    "sneakers": (("Running Sneakers", "Low-Top Sneakers", "Knit Trainers"), ("Women's", "Men's", "Unisex"),
                 ("Mesh", "Leather", "Canvas", "Knit"), ("casual", "sporty", "streetwear", "minimalist")),
    "jeans": (("Skinny Jeans", "Straight-Leg Jeans", "Mom Jeans", "Bootcut Jeans"), ("Women's", "Men's"),
              ("Denim", "Stretch Denim"), ("casual", "streetwear", "vintage")),
    "hoodie": (("Pullover Hoodie", "Zip-Up Hoodie", "Oversized Hoodie"), ("Women's", "Men's", "Unisex"),
               ("Cotton", "Fleece", "Polyester"), ("casual", "sporty", "streetwear")),
    "handbag": (("Crossbody Bag", "Tote Bag", "Shoulder Bag", "Clutch"), ("Women's",),
                ("Leather", "Vegan Leather", "Canvas", "Straw"), ("casual", "formal", "boho", "vintage", "minimalist")),
    "t-shirt": (("Crew Neck T-Shirt", "V-Neck Tee", "Graphic Tee"), ("Women's", "Men's", "Unisex"),
                ("Cotton", "Linen", "Polyester"), ("casual", "sporty", "streetwear", "minimalist")),
    "blouse": (("Button-Down Blouse", "Peasant Blouse", "Ruffle Blouse"), ("Women's",),
               ("Chiffon", "Silk", "Cotton", "Linen"), ("formal", "boho", "vintage", "preppy")),
    "boots": (("Ankle Boots", "Chelsea Boots", "Knee-High Boots", "Combat Boots"), ("Women's", "Men's"),
              ("Leather", "Suede", "Vegan Leather"), ("casual", "formal", "vintage", "streetwear")),
    "sandals": (("Slide Sandals", "Strappy Sandals", "Platform Sandals"), ("Women's", "Men's"),
                ("Leather", "Rubber", "Suede"), ("casual", "boho", "minimalist")),
    "skirt": (("Pleated Midi Skirt", "A-Line Skirt", "Mini Skirt"), ("Women's",),
              ("Cotton", "Satin", "Denim", "Linen"), ("casual", "formal", "boho", "preppy")),
    "jacket": (("Bomber Jacket", "Denim Jacket", "Puffer Jacket", "Blazer"), ("Women's", "Men's"),
               ("Polyester", "Denim", "Wool Blend", "Leather"), ("casual", "formal", "streetwear", "sporty", "preppy")),
    "sweater": (("Cable Knit Sweater", "Cardigan", "Turtleneck Sweater"), ("Women's", "Men's"),
                ("Wool", "Cashmere", "Cotton", "Acrylic"), ("casual", "preppy", "vintage", "minimalist")),
    "leggings": (("High-Waist Leggings", "Yoga Leggings"), ("Women's",),
                 ("Nylon", "Spandex", "Cotton"), ("sporty", "casual")),
    "backpack": (("Laptop Backpack", "Mini Backpack", "Drawstring Backpack"), ("Women's", "Men's", "Unisex"),
                 ("Nylon", "Canvas", "Leather"), ("casual", "sporty", "streetwear", "minimalist")),
    "scarf": (("Infinity Scarf", "Blanket Scarf", "Silk Square Scarf"), ("Women's", "Unisex"),
              ("Wool", "Silk", "Cashmere", "Acrylic"), ("casual", "formal", "boho", "vintage")),
    "sunglasses": (("Aviator Sunglasses", "Cat Eye Sunglasses", "Round Sunglasses"), ("Women's", "Men's", "Unisex"),
                   ("Metal", "Acetate"), ("casual", "vintage", "sporty", "minimalist")),
}
COLOURS = ("Black", "White", "Navy Blue", "Red", "Olive Green", "Beige", "Pink", "Grey", "Burgundy",
           "Mustard Yellow", "Brown", "Sky Blue")
STYLES = ("casual", "formal", "sporty", "boho", "vintage", "streetwear", "minimalist", "preppy")
PRICE_BANDS = ("budget", "mid", "premium", "luxury")
PRICE_RANGES = {"budget": (9.0, 30.0), "mid": (30.0, 70.0), "premium": (70.0, 160.0), "luxury": (160.0, 420.0)}
# invented brands, four per price band
BRANDS = {
    "Brightmoor": "budget", "Sunnyfield": "budget", "Urbanly": "budget", "Pepper & Pine": "budget",
    "Lumera": "mid", "Northvale": "mid", "Rivora": "mid", "Kestrel & Co": "mid",
    "Solenne": "premium", "Ameline": "premium", "Tessaly": "premium", "Orvik": "premium",
    "Vantor": "luxury", "Quillon": "luxury", "Aubrey Maison": "luxury", "Castellane": "luxury",
}
DESCRIPTORS = ("Floral", "Striped", "Solid", "Plaid", "Classic", "Slim Fit", "Lightweight", "Relaxed Fit")

# utility weights per attribute, softmax temperatures, grade quantiles (fractions of the catalogue from the top)
WEIGHTS = {"category": 1.0, "style": 0.7, "colour": 0.6, "brand": 0.5, "price": 0.5}
UTILITY_NOISE = 0.1
HISTORY_TEMPERATURE, NEAR_TEMPERATURE, HISTORY_UNIFORM_MIX = 0.2, 0.5, 0.15
GRADE_QUANTILES = ((3, 0.03), (2, 0.10), (1, 0.30))  # (grade, top fraction)
TITLE_FORMATS = ("full", "short", "plain")


def letter_ids(k: int) -> tuple[str, ...]:
    """Candidate ids for K candidates: "A", "B", ... (K <= 26)."""
    if not 2 <= k <= 26:
        raise DomainError(f"k must be in 2..26 (one letter per candidate), got {k}")
    return tuple(chr(ord("A") + i) for i in range(k))


def history_context(titles: list[str] | tuple[str, ...]) -> str:
    """The next-item context: history titles, oldest first, one numbered line each."""
    lines = [f"{i}. {t}" for i, t in enumerate(titles, 1)]
    return "Purchase history (oldest first):\n" + "\n".join(lines)


@dataclass(frozen=True)
class SynthConfig:
    """Sizes of the synthetic shop. Defaults: 800 items, 2,000 users (1,600/200/200), one task per user."""

    n_items: int = 800
    n_users: int = 2000
    tasks_per_user: int = 1
    history_len: int = 5  # most recent titles shown (max)
    min_history: int = 3  # fewest titles shown
    k: int = 8
    validation_frac: float = 0.1
    test_frac: float = 0.1
    seed: int = 0
    # Learnability knobs (the defaults reproduce the original data bit for bit):
    # title_format "full": "Brand Audience [Descriptor] Noun - Colour, Style, Material";
    #              "short": "Noun - Colour, Style" (only the attributes that drive preference, brand aside);
    #              "plain": "Style Colour Category", e.g. "Casual Navy Blue Dress" (the category named by one word)
    title_format: str = "full"
    # utility weights (category, style, colour, brand, price); 0 removes an attribute from the preference
    weights: tuple[float, float, float, float, float] = (1.0, 0.7, 0.6, 0.5, 0.5)
    utility_noise: float = 0.1  # sd of the per user-item Gaussian noise in u
    history_uniform_mix: float = 0.15  # share of uniform (off-taste) draws in the purchase sequence

    def check(self) -> None:
        letter_ids(self.k)
        if self.n_items < 3 * (self.k + self.history_len + self.tasks_per_user):
            raise DomainError(f"n_items={self.n_items} is too small for k={self.k}, history_len={self.history_len}")
        if self.n_users < 3:
            raise DomainError(f"n_users must be >= 3 (one per split), got {self.n_users}")
        if not 1 <= self.min_history <= self.history_len:
            raise DomainError(f"need 1 <= min_history <= history_len, got {self.min_history}, {self.history_len}")
        if self.tasks_per_user < 1:
            raise DomainError(f"tasks_per_user must be >= 1, got {self.tasks_per_user}")
        if not (0 <= self.validation_frac and 0 <= self.test_frac and self.validation_frac + self.test_frac < 1):
            raise DomainError("need validation_frac, test_frac >= 0 with sum < 1")
        if self.title_format not in TITLE_FORMATS:
            raise DomainError(f"title_format must be one of {', '.join(TITLE_FORMATS)}, got {self.title_format!r}")
        if self.title_format != "full" and self.n_items > distinct_titles(self.title_format):
            raise DomainError(f"n_items={self.n_items} exceeds the {distinct_titles(self.title_format)} distinct "
                              f"{self.title_format!r} titles")
        if len(self.weights) != len(WEIGHTS) or min(self.weights) < 0 or max(self.weights) <= 0:
            raise DomainError(f"weights needs {len(WEIGHTS)} values >= 0 (category, style, colour, brand, price), "
                              f"not all 0; got {self.weights}")
        if self.utility_noise < 0 or not 0 <= self.history_uniform_mix <= 1:
            raise DomainError("need utility_noise >= 0 and 0 <= history_uniform_mix <= 1")


@dataclass(frozen=True)
class Item:
    id: str
    title: str
    category: str
    colour: str
    style: str
    brand: str
    price_band: str
    material: str
    price: float


def distinct_titles(title_format: str) -> int:
    """How many different titles the "short" and "plain" formats can spell (the catalogue's titles are unique)."""
    per_cat = {"short": lambda c: len(CATEGORIES[c][0]) * len(CATEGORIES[c][3]),
               "plain": lambda c: len(CATEGORIES[c][3])}[title_format]
    return len(COLOURS) * sum(per_cat(c) for c in CATEGORIES)


def make_catalogue(n_items: int, rng: np.random.Generator, title_format: str = "full") -> list[Item]:
    """`n_items` items with unique titles; attributes drawn uniformly within what each category allows.
    The same draws for every title format; "short" titles keep only noun, colour and style, "plain" ones only
    style, colour and category (being fewer distinct strings, they may reject more duplicates)."""
    brands = list(BRANDS)
    cats = list(CATEGORIES)
    items: list[Item] = []
    seen: set[str] = set()
    while len(items) < n_items:
        cat = cats[rng.integers(len(cats))]
        nouns, audiences, materials, styles = CATEGORIES[cat]
        noun, audience = nouns[rng.integers(len(nouns))], audiences[rng.integers(len(audiences))]
        material, style = materials[rng.integers(len(materials))], styles[rng.integers(len(styles))]
        colour, brand = COLOURS[rng.integers(len(COLOURS))], brands[rng.integers(len(brands))]
        descriptor = DESCRIPTORS[rng.integers(len(DESCRIPTORS))] + " " if rng.random() < 0.5 else ""
        if title_format == "short":
            title = f"{noun} - {colour}, {style.capitalize()}"
        elif title_format == "plain":
            title = f"{style.capitalize()} {colour} {cat.title()}"
        else:
            title = f"{brand} {audience} {descriptor}{noun} - {colour}, {style.capitalize()}, {material}"
        if title in seen:
            continue
        seen.add(title)
        lo, hi = PRICE_RANGES[BRANDS[brand]]
        price = round(float(rng.uniform(lo, hi)), 2)
        items.append(Item(f"S{len(items):05d}", title, cat, colour, style, brand, BRANDS[brand], material, price))
    return items


ATTRIBUTE_VALUES = {"category": tuple(CATEGORIES), "colour": COLOURS, "style": STYLES, "brand": tuple(BRANDS),
                    "price": PRICE_BANDS}


def _liked(n_values: int, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
    """A sparse preference vector: lo..hi liked values with weights in [0.5, 1], the rest 0."""
    v = np.zeros(n_values)
    chosen = rng.choice(n_values, size=int(rng.integers(lo, hi + 1)), replace=False)
    v[chosen] = rng.uniform(0.5, 1.0, size=len(chosen))
    return v


def sample_preferences(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One user's latent taste, a vector per attribute (indexed like ATTRIBUTE_VALUES): liked categories (2-4),
    colours (2-3), styles (1-2), brands (2-3), and one price band (1.0; adjacent bands 0.5)."""
    band = int(rng.integers(len(PRICE_BANDS)))
    price = np.array([1.0 if i == band else 0.5 if abs(i - band) == 1 else 0.0 for i in range(len(PRICE_BANDS))])
    return {
        "category": _liked(len(CATEGORIES), 2, 4, rng),
        "colour": _liked(len(COLOURS), 2, 3, rng),
        "style": _liked(len(STYLES), 1, 2, rng),
        "brand": _liked(len(BRANDS), 2, 3, rng),
        "price": price,
    }


def attribute_codes(items: list[Item]) -> dict[str, np.ndarray]:
    """Per attribute, each item's value index into ATTRIBUTE_VALUES (for vectorised utilities)."""
    index = {a: {v: i for i, v in enumerate(vals)} for a, vals in ATTRIBUTE_VALUES.items()}
    field = {"category": "category", "colour": "colour", "style": "style", "brand": "brand", "price": "price_band"}
    return {a: np.array([index[a][getattr(it, field[a])] for it in items]) for a in ATTRIBUTE_VALUES}


def utility(prefs: dict[str, np.ndarray], codes: dict[str, np.ndarray], rng: np.random.Generator,
            weights: dict[str, float] | None = None, noise: float = UTILITY_NOISE) -> np.ndarray:
    """u = sum of weighted attribute preferences + per user-item Gaussian noise (see module docstring)."""
    weights = WEIGHTS if weights is None else weights
    u = sum(weights[a] * prefs[a][codes[a]] for a in ATTRIBUTE_VALUES)
    return u + rng.normal(0.0, noise, size=len(u))


def grades(u: np.ndarray) -> np.ndarray:
    """Relevance 0-3 from the utility's quantile over the whole catalogue (top 3% / 10% / 30%)."""
    g = np.zeros(len(u), dtype=int)
    order = np.argsort(-u, kind="stable")
    for grade, frac in reversed(GRADE_QUANTILES):  # 1 first, then 2 and 3 overwrite the top
        g[order[: max(1, int(round(frac * len(u))))]] = grade
    return g


def _draw(weights: np.ndarray, n: int, exclude: set[int], rng: np.random.Generator) -> list[int]:
    """n distinct indices drawn without replacement with probability ∝ weights, never from `exclude`."""
    w = weights.copy()
    w[list(exclude)] = 0.0
    return [int(i) for i in rng.choice(len(w), size=n, replace=False, p=w / w.sum())]


def _softmax(u: np.ndarray, temperature: float) -> np.ndarray:
    z = np.exp((u - u.max()) / temperature)
    return z / z.sum()


def split_users(n_users: int, validation_frac: float, test_frac: float, rng: np.random.Generator) -> list[str]:
    """The split of each user: a seeded permutation; the first test_frac go to test, then validation, rest train."""
    n_test, n_val = int(round(test_frac * n_users)), int(round(validation_frac * n_users))
    splits = ["train"] * n_users
    for rank, user in enumerate(rng.permutation(n_users)):
        if rank < n_test:
            splits[user] = "test"
        elif rank < n_test + n_val:
            splits[user] = "validation"
    return splits


def user_tasks(user: int, split: str, items: list[Item], codes: dict[str, np.ndarray], cfg: SynthConfig,
               rng: np.random.Generator) -> list[Task]:
    """A user's tasks: a purchase sequence from their taste, then one next-item task per extra purchase."""
    prefs = sample_preferences(rng)
    u = utility(prefs, codes, rng, dict(zip(WEIGHTS, cfg.weights)), cfg.utility_noise)
    g = grades(u)
    mix = cfg.history_uniform_mix
    p_hist = (1 - mix) * _softmax(u, HISTORY_TEMPERATURE) + mix / len(items)
    p_near = _softmax(u, NEAR_TEMPERATURE)
    seq = _draw(p_hist, cfg.history_len + cfg.tasks_per_user, set(), rng)
    ids = letter_ids(cfg.k)
    tasks = []
    for j in range(cfg.tasks_per_user):
        nxt = seq[cfg.history_len + j]
        h = int(rng.integers(cfg.min_history, cfg.history_len + 1))
        history = seq[cfg.history_len + j - h: cfg.history_len + j]
        taken = set(seq)
        near = _draw(p_near, min(2, cfg.k - 1), taken, rng)
        rest = _draw(np.ones(len(items)), cfg.k - 1 - len(near), taken | set(near), rng)
        chosen = [nxt] + near + rest
        chosen = [chosen[i] for i in rng.permutation(len(chosen))]
        tasks.append(Task(
            id=f"synth-u{user:05d}-{j}",
            context=history_context([items[i].title for i in history]),
            candidates=tuple(Candidate(cid, items[i].title) for cid, i in zip(ids, chosen)),
            relevance={cid: float(g[i]) for cid, i in zip(ids, chosen)},
            split=split,
            meta={"task": "next-item", "source": "synth", "user": user, "next": ids[chosen.index(nxt)],
                  "items": {cid: items[i].id for cid, i in zip(ids, chosen)}},
        ))
    return tasks


def make_synth_tasks(cfg: SynthConfig | None = None, **overrides) -> list[Task]:
    """All tasks of the synthetic shop, train users first, each user's tasks in order. Same config -> same tasks."""
    cfg = cfg or SynthConfig()
    if overrides:
        cfg = SynthConfig(**{**asdict(cfg), **overrides})
    cfg.check()
    root = np.random.SeedSequence(cfg.seed)
    cat_seed, split_seed, user_seed = root.spawn(3)
    items = make_catalogue(cfg.n_items, np.random.default_rng(cat_seed), cfg.title_format)
    splits = split_users(cfg.n_users, cfg.validation_frac, cfg.test_frac, np.random.default_rng(split_seed))
    codes = attribute_codes(items)
    user_rngs = [np.random.default_rng(s) for s in user_seed.spawn(cfg.n_users)]
    tasks = [t for user in range(cfg.n_users)
             for t in user_tasks(user, splits[user], items, codes, cfg, user_rngs[user])]
    order = {"train": 0, "validation": 1, "test": 2}
    return sorted(tasks, key=lambda t: order[t.split])  # stable: user order kept within a split


def make_catalogue_for(cfg: SynthConfig) -> list[Item]:
    """The catalogue `make_synth_tasks(cfg)` uses (same seed stream), for inspection."""
    cat_seed = np.random.SeedSequence(cfg.seed).spawn(3)[0]
    return make_catalogue(cfg.n_items, np.random.default_rng(cat_seed), cfg.title_format)
