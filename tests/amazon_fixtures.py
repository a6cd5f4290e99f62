"""UniSRec-layout test data: write a dataset's six files, or fabricate a random dataset.

Tests write these to tmp folders; the real data is never copied.
"""

import os
import string

import numpy as np

from gr_jax.data import schema
from gr_jax.data.amazon import reader as amazon


def write_unisrec(data_dir, dataset, texts, index, users, inter, raw_text_line=None) -> str:
  """Writes `<dataset>.text`, `.item2index`, `.user2index` and `.{split}.inter`.

  Args:
    data_dir: folder to write to (made if missing).
    dataset: the file prefix.
    texts: (ASIN, text) pairs, in file order.
    index: ASINs in dense-id order.
    users: user keys in dense-id order.
    inter: split -> rows, each (user, history ids, target id) or a raw line.
    raw_text_line: bytes appended to the text file as one more line.

  Returns:
    `data_dir` as a string.
  """
  files = amazon.UnisrecFiles(dataset)
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, files.text), "wb") as f:
    f.write(b"item_id:token\ttext:token_seq\n")
    for asin, body in texts:
      f.write(f"{asin}\t{body}\n".encode())
    if raw_text_line is not None:
      f.write(raw_text_line + b"\n")
  with open(os.path.join(data_dir, files.item_index), "w") as f:
    f.writelines(f"{asin}\t{i}\n" for i, asin in enumerate(index))
  with open(os.path.join(data_dir, files.user_index), "w") as f:
    f.writelines(f"{user}\t{i}\n" for i, user in enumerate(users))
  for split, rows in inter.items():
    with open(os.path.join(data_dir, files.inter(split)), "w") as f:
      f.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
      for row in rows:
        if isinstance(row, str):
          f.write(row + "\n")
        else:
          user, history, target = row
          f.write(f"{user}\t{' '.join(map(str, history))}\t{target}\n")
  return str(data_dir)


def fabricate(
  data_dir,
  dataset="Office",
  root="Office Products",
  num_items=300,
  num_users=200,
  num_leaves=12,
  sequence_len=6,
  seed=0,
) -> str:
  """Writes a random UniSRec dataset: random words, a two-level category tree under `root`.

  Titles are "<brand> <word> <a word of the item's leaf category> <word> <n>mm", so
  they name their category, as real titles often do. Every 10th item has no
  category. Each user has one random sequence of `sequence_len` distinct items,
  split leave-one-out (train rows are its prefixes).

  Returns:
    `data_dir` as a string.
  """
  rng = np.random.default_rng(seed)
  letters = np.array(list(string.ascii_lowercase))
  vocab = sorted({"".join(rng.choice(letters, rng.integers(4, 9))) for _ in range(400)})
  vocab = [str(w) for w in rng.permutation(vocab)]
  num_tops = max(1, num_leaves // 3)
  tops = [f"{vocab[2 * t].title()} {vocab[2 * t + 1].title()}" for t in range(num_tops)]
  leaf_words = vocab[2 * num_tops : 2 * num_tops + num_leaves]
  leaves = [f"{root} {tops[k % num_tops]} {w.title()} Parts" for k, w in enumerate(leaf_words)]
  title_words = vocab[2 * num_tops + num_leaves :]
  brands = [w.title() for w in title_words[:20]]
  texts, asins = [], []
  for item in range(num_items):
    leaf = int(rng.integers(num_leaves))
    words = rng.choice(title_words[len(brands) :], 2, replace=False)
    brand = brands[item % len(brands)]
    title = f"{brand} {words[0]} {leaf_words[leaf]} {words[1]} {rng.integers(2, 99)}mm"
    category = "" if item % 10 == 9 else leaves[leaf]
    asins.append(f"X{item:05d}")
    texts.append((asins[-1], f"{title}. {category}. {brand}. "))
  inter = {split: [] for split in schema.SPLITS}
  for user in range(num_users):
    sequence = rng.choice(num_items, sequence_len, replace=False)
    for k in range(1, sequence_len - 2):
      inter["train"].append((user, sequence[:k], sequence[k]))
    inter["valid"].append((user, sequence[:-2], sequence[-2]))
    inter["test"].append((user, sequence[:-1], sequence[-1]))
  users = [f"R{user}" for user in range(num_users)]
  return write_unisrec(data_dir, dataset, texts, asins, users, inter)
