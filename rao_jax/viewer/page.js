/* The call-tree viewer page, inlined by rao_jax/viewer/html.py.
 *
 * Data: #rao-meta holds the run (its list of tree files); #rao-file-<i>
 * holds file i's trees and is parsed only when that file is opened.
 * Views: the run page (a table of the files) and a file page (its trees,
 * the trees of a group side by side). Everything is built lazily: a node's
 * children exist in the DOM only once it is expanded, its turns only once
 * they are opened, so a big tree costs what is on screen, not its size.
 */
'use strict';

const META = JSON.parse(document.getElementById('rao-meta').textContent);
const INITIAL_ROWS = 40;    // rows a tree shows when its file opens
const CHILDREN_BATCH = 50;  // children built at a time ("show more")
const MAX_RESULTS = 200;    // search hits listed
const TAG_RE =
    /(<\/?(?:think|tool|spawn|answer|task|data|format|obs|result)>)/;

// ------------------------------------------------------------ helpers

const parsedFiles = new Map();  // file index -> its trees

function fileTrees(index) {
  if (!parsedFiles.has(index)) {
    const script = document.getElementById('rao-file-' + index);
    parsedFiles.set(index, JSON.parse(script.textContent));
  }
  return parsedFiles.get(index);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function button(action, text, title) {
  const node = el('button', action, text);
  node.type = 'button';
  node.dataset.action = action;
  if (title) node.title = title;
  return node;
}

function fmt(value, signed) {
  if (value === null || value === undefined) return '-';
  const text = value.toFixed(2);
  if (/^-?0\.00$/.test(text)) return '0.00';  // no '-0.00' or '+0.00'
  return (signed && value > 0 ? '+' : '') + text;
}

function short(text, width) {
  text = String(text).replace(/\n/g, '\u21b5');
  return text.length <= width ? text : text.slice(0, width - 1) + '\u2026';
}

function childIds(node) {
  return node.children.flat();
}

// Red at 0 to green at the file's highest reward (success when a node has
// no reward yet, as in SFT and evaluation trees); grey when unscored.
function rewardColor(node, maxReward) {
  const value = node.reward !== null ? node.reward : node.success;
  if (value === null || value === undefined) return 'var(--unscored)';
  const hue = 120 * Math.max(0, Math.min(1, value / maxReward));
  return `hsl(${hue.toFixed(0)}, 65%, 87%)`;
}

// Text with its protocol tags marked, built as DOM nodes (never as HTML,
// so a task or answer cannot inject markup).
function taggedText(text) {
  const pre = el('pre');
  text.split(TAG_RE).forEach((part, i) => {
    if (!part) return;
    pre.append(i % 2 ? el('span', 'tag', part) : document.createTextNode(part));
  });
  return pre;
}

function actionSummary(text) {
  // The python mode: a code block; its children are listed under it.
  if (/```[\w+-]*\n/.test(text)) {
    return 'code' + (/\banswer\(/.test(text) ? ' \u00b7 answer' : '') +
           (/\bspawn\(/.test(text) ? ' \u00b7 spawn' : '');
  }
  const tool = /<tool>\s*([A-Za-z_][\w-]*)/.exec(text);
  if (tool) return 'tool call: ' + tool[1];
  if (text.includes('<spawn>')) {
    return 'spawn: ' + (text.match(/<task>/g) || []).length + ' children';
  }
  if (text.includes('<answer>')) return 'answer';
  return 'no action';
}

function turnLabel(turn) {
  switch (turn.kind) {
    case 'prompt': return 'prompt (injected)';
    case 'policy': return 'policy wrote \u00b7 ' + actionSummary(turn.text);
    case 'results': return "children's results (injected)";
    default:
      return /^\s*<obs>\s*error/.test(turn.text) ? 'error (injected)' :
                                                   'observation (injected)';
  }
}

// A node's status, answer (cut to `width`) and scores, labelled `names`.
function outcome(node, width, names) {
  return [
    el('span', 'status ' + node.status, node.status),
    el('span', 'answer',
       node.answer === null ? '' : '\u2192 ' + short(node.answer, width)),
    el('span', 'metric', names[0] + fmt(node.success)),
    el('span', 'metric', names[1] + fmt(node.reward)),
    el('span', 'metric', names[2] + fmt(node.advantage, true)),
  ];
}

// ------------------------------------------------------------ one tree

class TreeView {
  constructor(tree, maxReward) {
    this.tree = tree;
    this.maxReward = maxReward;
    this.byId = new Map(tree.nodes.map(n => [n.id, n]));
    this.boxes = new Map();  // node id -> its element, once built
    this.element = el('div', 'tree');
    this.element.dataset.treeId = tree.tree_id;
    this.element.append(this.header());
    this.body = el('div', 'tree-body');
    this.body.append(this.nodeBox(tree.nodes[0]));
    this.element.append(this.body);
    // One listener a tree: rows are built and dropped too often to wire
    // each button.
    this.element.addEventListener('click', e => this.onClick(e));
    this.expandInitial();
  }

  header() {
    const root = this.tree.nodes[0];
    const head = el('div', 'tree-header');
    head.append(
        el('b', null, 'tree ' + this.tree.tree_id),
        ...outcome(root, 40, ['success ', 'reward ', 'adv ']),
        el('span', 'count', this.tree.nodes.length + ' nodes'),
        button('expand-all', 'expand all'),
        button('collapse-all', 'collapse all'));
    return head;
  }

  nodeBox(node) {
    const box = el('div', 'node');
    box.dataset.id = node.id;
    const row = el('div', 'row');
    row.style.background = rewardColor(node, this.maxReward);
    const kids = childIds(node);
    const toggle = button('toggle', kids.length ? '\u25b8' : '\u00b7',
                          kids.length + ' children');
    toggle.disabled = !kids.length;
    row.append(
        toggle, el('span', 'id', '#' + node.id),
        el('span', 'task', short(node.task, 48)),
        el('span', 'count', node.data_len + ' ch'),
        ...outcome(node, 32, ['s ', 'r ', 'a ']),
        el('span', 'count', node.tokens + ' tok'),
        button('turns', 'turns', 'what the node read and wrote'));
    row.title = node.task;
    box.append(row);
    this.boxes.set(node.id, box);
    return box;
  }

  onClick(event) {
    const target = event.target.closest('[data-action]');
    if (!target || !this.element.contains(target)) return;
    const box = target.closest('.node');
    const id = box ? Number(box.dataset.id) : null;
    switch (target.dataset.action) {
      case 'toggle':
        this.isExpanded(id) ? this.collapse(id) : this.expand(id);
        break;
      case 'turns': this.toggleDetails(id); break;
      case 'more': this.buildKids(id, Infinity); break;
      case 'goto': this.reveal(Number(target.dataset.target)); break;
      case 'expand-all': this.expandAll(); break;
      case 'collapse-all': this.collapse(this.tree.nodes[0].id); break;
    }
  }

  isExpanded(id) {
    const kids = this.boxes.get(id).querySelector(':scope > .kids');
    return kids !== null && !kids.hidden;
  }

  // Builds the node's children up to index `upTo` (at least a batch).
  buildKids(id, upTo) {
    const box = this.boxes.get(id);
    let kids = box.querySelector(':scope > .kids');
    if (!kids) {
      kids = el('div', 'kids');
      box.append(kids);
    }
    const ids = childIds(this.byId.get(id));
    const built = kids.querySelectorAll(':scope > .node').length;
    const end = Math.min(ids.length,
                         Math.max(built + CHILDREN_BATCH, upTo + 1));
    const more = kids.querySelector(':scope > .more');
    if (more) more.remove();
    for (let i = built; i < end; i++) {
      kids.append(this.nodeBox(this.byId.get(ids[i])));
    }
    if (end < ids.length) {
      kids.append(button('more', `show ${ids.length - end} more children`));
    }
    return kids;
  }

  expand(id) {
    const box = this.boxes.get(id);
    const kids = box.querySelector(':scope > .kids') || this.buildKids(id, 0);
    kids.hidden = false;
    box.querySelector(':scope > .row > .toggle').textContent = '\u25be';
  }

  collapse(id) {
    const box = this.boxes.get(id);
    const kids = box.querySelector(':scope > .kids');
    if (kids) kids.hidden = true;
    box.querySelector(':scope > .row > .toggle').textContent =
        childIds(this.byId.get(id)).length ? '\u25b8' : '\u00b7';
  }

  // The upper levels, breadth first, until INITIAL_ROWS rows show.
  expandInitial() {
    const queue = [this.tree.nodes[0]];
    let rows = 1;
    while (queue.length) {
      const node = queue.shift();
      const kids = childIds(node);
      if (!kids.length) continue;
      if (rows + kids.length > INITIAL_ROWS && node !== this.tree.nodes[0]) {
        break;
      }
      this.expand(node.id);
      rows += Math.min(kids.length, CHILDREN_BATCH);
      kids.slice(0, CHILDREN_BATCH).forEach(k => queue.push(this.byId.get(k)));
    }
  }

  expandAll() {
    for (const node of this.tree.nodes) {  // pre-order: parents first
      if (childIds(node).length) {
        this.buildKids(node.id, Infinity);
        this.expand(node.id);
      }
    }
  }

  // Expands the node's ancestors, scrolls to it and flashes it.
  reveal(id) {
    const chain = [];
    for (let n = this.byId.get(id); n; n = this.byId.get(n.parent)) {
      chain.unshift(n);
      if (n.parent === null) break;
    }
    for (let i = 0; i + 1 < chain.length; i++) {
      const ids = childIds(chain[i]);
      this.buildKids(chain[i].id, ids.indexOf(chain[i + 1].id));
      this.expand(chain[i].id);
    }
    const box = this.boxes.get(id);
    box.scrollIntoView({block: 'center'});
    box.classList.remove('flash');
    void box.offsetWidth;  // restart the animation
    box.classList.add('flash');
  }

  toggleDetails(id) {
    const box = this.boxes.get(id);
    let details = box.querySelector(':scope > .details');
    if (details) {
      details.hidden = !details.hidden;
      return;
    }
    details = this.details(this.byId.get(id));
    box.querySelector(':scope > .row').after(details);
  }

  details(node) {
    const panel = el('div', 'details');
    const spec = el('div', 'spec');
    spec.append(el('div', null, 'task: ' + node.task));
    if (node.format) spec.append(el('div', null, 'format: ' + node.format));
    const data = el('details');
    data.append(el('summary', null, `data: ${node.data_len} chars` +
                   (node.data_len > node.data.length ?
                        ` (first ${node.data.length} shown)` : '')));
    data.append(el('pre', null, node.data));
    spec.append(data, el('div', null,
                         `depth ${node.depth} \u00b7 ${node.steps} steps`));
    panel.append(spec);
    if (node.turns === null) {
      panel.append(el('div', 'note', 'no turns: the file stores none and ' +
                                     'the run names no tokenizer'));
      return panel;
    }
    let step = 0;  // the k-th policy turn is step k
    for (const turn of node.turns) {
      const block = el('div', 'turn ' + turn.kind);
      block.append(el('div', 'label', turnLabel(turn)), taggedText(turn.text));
      panel.append(block);
      if (turn.kind !== 'policy') continue;
      const spawned = node.children[step++] || [];
      if (spawned.length) {
        const links = el('div', 'spawned', 'children: ');
        for (const child of spawned) {
          const link = button('goto', '#' + child + ' ' +
                              short(this.byId.get(child).task, 24));
          link.dataset.target = child;
          links.append(link);
        }
        panel.append(links);
      }
    }
    return panel;
  }
}

// ------------------------------------------------------------ views

const main = document.getElementById('main');
const select = document.getElementById('file-select');
let current = {view: null, file: null, treeViews: []};

function headedTable(className, names) {
  const table = el('table', className);
  const head = el('tr');
  for (const name of names) head.append(el('th', null, name));
  table.append(head);
  return table;
}

function showRun() {
  main.replaceChildren();
  current = {view: 'run', file: null, treeViews: []};
  select.value = '';
  const table = headedTable('files', [
    'file', 'phase', 'step', 'trees', 'nodes', 'root success (saved trees)',
    'root success (run)']);
  META.files.forEach((file, index) => {
    const row = el('tr');
    const link = el('a', null, file.name);
    link.href = '#file=' + index;
    const cells = [file.phase + (file.level ? ' ' + file.level : ''),
                   file.step === null ? '-' : file.step, file.trees,
                   file.nodes, fmt(file.root_success),
                   fmt(file.run_root_success)];
    const first = el('td');
    first.append(link);
    row.append(first, ...cells.map(c => el('td', null, c)));
    table.append(row);
  });
  main.append(el('h1', null, 'Saved call trees'), table);
}

function groupSummary(trees) {
  const table = headedTable('summary', [
    'tree', 'root answer', 'success', 'reward', 'adv', 'nodes', 'tokens']);
  const best = Math.max(...trees.map(t => t.nodes[0].reward ?? -Infinity));
  for (const tree of trees) {
    const root = tree.nodes[0];
    const row = el('tr', root.reward === best && trees.length > 1 ? 'best' :
                                                                   null);
    const tokens = tree.nodes.reduce((sum, n) => sum + n.tokens, 0);
    for (const cell of [tree.tree_id, short(root.answer ?? '', 24),
                        fmt(root.success), fmt(root.reward),
                        fmt(root.advantage, true), tree.nodes.length,
                        tokens]) {
      row.append(el('td', null, cell));
    }
    table.append(row);
  }
  return table;
}

function showFile(index) {
  main.replaceChildren();
  const trees = fileTrees(index);
  current = {view: 'file', file: index, treeViews: []};
  select.value = String(index);
  const info = META.files[index];
  main.append(el('h1', null, `${info.name} \u00b7 ${trees.length} trees`));
  let maxReward = 1;
  for (const tree of trees) {
    for (const node of tree.nodes) {
      if (node.reward !== null) maxReward = Math.max(maxReward, node.reward);
    }
  }
  const groups = new Map();  // group id -> its trees, in file order
  for (const tree of trees) {
    if (!groups.has(tree.group)) groups.set(tree.group, []);
    groups.get(tree.group).push(tree);
  }
  for (const [group, members] of groups) {
    const section = el('section', 'group');
    section.dataset.group = group;
    section.append(el('h2', null, `group ${group} \u00b7 ${members.length} ` +
                   `tree${members.length > 1 ? 's' : ''} \u00b7 ` +
                   short(members[0].nodes[0].task, 60)));
    if (members.length > 1) section.append(groupSummary(members));
    const row = el('div', 'group-trees');
    for (const tree of members) {
      const view = new TreeView(tree, maxReward);
      current.treeViews.push(view);
      row.append(view.element);
    }
    section.append(row);
    main.append(section);
  }
}

function route() {
  const match = /^#file=(\d+)$/.exec(location.hash);
  if (match && Number(match[1]) < META.files.length) {
    showFile(Number(match[1]));
  } else if (location.hash === '#run' || META.run_page) {
    showRun();
  } else {
    showFile(META.open_file);
  }
}

// ------------------------------------------------------------ search

const searchIndex = new Map();  // file index -> [{tree, id, text}]

function fileIndex(index) {
  if (!searchIndex.has(index)) {
    const entries = [];
    fileTrees(index).forEach((tree, t) => {
      for (const node of tree.nodes) {
        entries.push({tree: t, id: node.id,
                      text: (node.task + '\n' + (node.answer ?? ''))
                                .toLowerCase()});
      }
    });
    searchIndex.set(index, entries);
  }
  return searchIndex.get(index);
}

function openHit(file, tree, id) {
  if (current.view !== 'file' || current.file !== file) {
    history.replaceState(null, '', '#file=' + file);
    showFile(file);
  }
  current.treeViews[tree].reveal(id);
}

function search(query) {
  const results = document.getElementById('results');
  query = query.trim().toLowerCase();
  if (!query) {
    results.hidden = true;
    return;
  }
  // The run page searches every file, a file page its own trees.
  const files = current.view === 'file' ? [current.file] :
                                          META.files.map((_, i) => i);
  const hits = [];
  let total = 0;
  for (const file of files) {
    for (const entry of fileIndex(file)) {
      if (!entry.text.includes(query)) continue;
      total++;
      if (hits.length < MAX_RESULTS) hits.push({file, ...entry});
    }
  }
  results.replaceChildren(el('div', 'hits-count', `${total} matches` +
                             (total > hits.length ?
                                  ` (first ${hits.length} listed)` : '')));
  for (const hit of hits) {
    const node = fileTrees(hit.file)[hit.tree].nodes.find(n => n.id === hit.id);
    const link = el('button', 'hit',
                    `${META.files[hit.file].name} \u00b7 tree ` +
                        `${fileTrees(hit.file)[hit.tree].tree_id} \u00b7 #` +
                        `${node.id} ${short(node.task, 40)} \u2192 ` +
                        short(node.answer ?? '', 24));
    link.type = 'button';
    link.addEventListener('click', () => openHit(hit.file, hit.tree, hit.id));
    results.append(link);
  }
  results.hidden = false;
}

// ------------------------------------------------------------ start

function start() {
  const placeholder = el('option', null, '(choose a file)');
  placeholder.value = '';
  placeholder.disabled = true;
  select.append(placeholder);
  document.getElementById('run-link').hidden = META.files.length < 2;
  META.files.forEach((file, index) => {
    const option = el('option', null, file.name);
    option.value = String(index);
    select.append(option);
  });
  select.addEventListener('change', () => {
    location.hash = '#file=' + select.value;
  });
  let timer = null;
  document.getElementById('search').addEventListener('input', e => {
    clearTimeout(timer);
    timer = setTimeout(() => search(e.target.value), 120);
  });
  window.addEventListener('hashchange', route);
  route();
  // 'rendered' once the first view has been laid out and painted: the
  // frame callback runs before that paint, the timeout after it.
  requestAnimationFrame(() => setTimeout(() => {
    performance.mark('rendered');
    document.documentElement.dataset.rendered = 'true';
  }, 0));
}

start();
