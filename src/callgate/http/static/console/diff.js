// Line diffs of two documents (presentation only: which lines differ, never a decision).

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value).sort()) out[key] = sortKeys(value[key]);
    return out;
  }
  return value;
}

export function pretty(document) {
  return JSON.stringify(sortKeys(document), null, 2);
}

const MAX_CELLS = 4_000_000;

// [{op: " " | "-" | "+", text}] turning a into b (LCS; beyond a size, a plain replace block).
export function diffLines(aText, bText) {
  const a = aText.split("\n");
  const b = bText.split("\n");
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const midA = a.slice(start, endA);
  const midB = b.slice(start, endB);
  const out = a.slice(0, start).map((text) => ({ op: " ", text }));
  if (midA.length * midB.length > MAX_CELLS) {
    midA.forEach((text) => out.push({ op: "-", text }));
    midB.forEach((text) => out.push({ op: "+", text }));
  } else {
    const n = midA.length;
    const m = midB.length;
    const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i][j] = midA[i] === midB[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && midA[i] === midB[j]) {
        out.push({ op: " ", text: midA[i] });
        i++;
        j++;
      } else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) {
        out.push({ op: "+", text: midB[j++] });
      } else {
        out.push({ op: "-", text: midA[i++] });
      }
    }
  }
  a.slice(endA).forEach((text) => out.push({ op: " ", text }));
  return out;
}

// A <pre> of the diff, unchanged runs folded to 3 lines of context.
export function renderDiff(lines, element) {
  element.textContent = "";
  const changed = lines.map((line) => line.op !== " ");
  if (!changed.some(Boolean)) {
    element.textContent = "No difference.";
    return 0;
  }
  const near = (index) => {
    for (let k = Math.max(0, index - 3); k <= Math.min(lines.length - 1, index + 3); k++) {
      if (changed[k]) return true;
    }
    return false;
  };
  const pre = document.createElement("pre");
  pre.className = "diff";
  let skipped = false;
  let count = 0;
  lines.forEach((line, index) => {
    if (!near(index)) {
      if (!skipped) pre.append(Object.assign(document.createElement("span"), { className: "skip", textContent: "  …\n" }));
      skipped = true;
      return;
    }
    skipped = false;
    const span = document.createElement("span");
    span.className = line.op === "+" ? "add" : line.op === "-" ? "del" : "same";
    span.textContent = `${line.op} ${line.text}\n`;
    if (line.op !== " ") count++;
    pre.append(span);
  });
  element.append(pre);
  return count;
}
