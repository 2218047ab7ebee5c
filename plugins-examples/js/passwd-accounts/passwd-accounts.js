// passwd-accounts: CIS Debian Linux 12 checks of the local accounts in
// /etc/passwd, /etc/group and (when granted and readable) /etc/shadow.
//
// Grants it needs: `read = ["/etc/passwd", "/etc/group", "/etc/shadow"]`
// (/etc/shadow is optional: without it the checks that need it report
// `error`, and every other check still runs).
//
// Configuration: `skip` (text list), check ids not to run.
//
// Built with componentize-js against the `assessment` world of
// `assessment:plugin@0.2.0`, with `--disable http fetch-event` so that the
// component does not import `wasi:http` (see
// scripts/build-foreign-plugins.sh).

import { get as configGet } from 'assessment:plugin/config@0.2.0';
import { readFile } from 'assessment:plugin/filesystem@0.2.0';
import { emit as hostEmit } from 'assessment:plugin/results@0.2.0';
import { write as logWrite } from 'assessment:plugin/log@0.2.0';

const NAME = 'passwd-accounts';
const VERSION = '0.1.0';
const DEBIAN = 'CIS Debian Linux 12';
// Legacy NIS `+` entries are not in the Debian 12 benchmark any more; the
// distribution-independent benchmark still numbers them.
const INDEPENDENT = 'CIS Distribution Independent Linux';

const PASSWD = '/etc/passwd';
const GROUP = '/etc/group';
const SHADOW = '/etc/shadow';

// Above this many findings, per-user checks report only the users that fail
// (the host accepts 1 000 findings per run by default).
const FINDING_BUDGET = 900;

function check(id, title, severity, benchmark, item, remediation) {
  return { id, title, severity, references: [{ benchmark, id: item }], remediation };
}

const CHECKS = {
  rootOnlyUid0: check(
    'passwd-root-only-uid0',
    'root is the only account with UID 0',
    'critical',
    DEBIAN,
    '5.4.2.1',
    'Give the account its own UID with `usermod -u NEW_UID USER`, or remove it with `userdel USER`.',
  ),
  shadowedPasswords: check(
    'passwd-shadowed-passwords',
    'Accounts in /etc/passwd use shadowed passwords',
    'high',
    DEBIAN,
    '7.2.1',
    'Run `pwconv` to move the password hashes from /etc/passwd to /etc/shadow.',
  ),
  noEmptyPasswords: check(
    'shadow-no-empty-passwords',
    'No account has an empty password',
    'critical',
    DEBIAN,
    '7.2.2',
    'Lock the account with `passwd -l USER`, or set a password with `passwd USER`.',
  ),
  groupsExist: check(
    'passwd-groups-exist',
    "Every account's primary group exists in /etc/group",
    'low',
    DEBIAN,
    '7.2.3',
    'Create the missing group with `groupadd -g GID NAME`, or give the account an existing group with `usermod -g GROUP USER`.',
  ),
  shadowGroupEmpty: check(
    'group-shadow-empty',
    'The shadow group has no members',
    'medium',
    DEBIAN,
    '7.2.4',
    'Remove every member from the shadow group (`gpasswd -d USER shadow`) and give accounts whose primary group is shadow another group (`usermod -g GROUP USER`).',
  ),
  noDuplicateUids: check(
    'passwd-no-duplicate-uids',
    'No two accounts share a UID',
    'medium',
    DEBIAN,
    '7.2.5',
    'Give each account a unique UID with `usermod -u NEW_UID USER`, and fix the ownership of its files.',
  ),
  noDuplicateGids: check(
    'group-no-duplicate-gids',
    'No two groups share a GID',
    'medium',
    DEBIAN,
    '7.2.6',
    'Give each group a unique GID with `groupmod -g NEW_GID GROUP`, and fix the group ownership of its files.',
  ),
  noDuplicateUserNames: check(
    'passwd-no-duplicate-names',
    'No two accounts share a user name',
    'medium',
    DEBIAN,
    '7.2.7',
    'Rename or remove the duplicate entries (`usermod -l NEW_NAME` on the second account, or `vipw`).',
  ),
  noDuplicateGroupNames: check(
    'group-no-duplicate-names',
    'No two groups share a group name',
    'medium',
    DEBIAN,
    '7.2.8',
    'Rename or remove the duplicate entries (`groupmod -n NEW_NAME`, or `vigr`).',
  ),
  passwdNoPlus: check(
    'passwd-no-legacy-plus',
    'No legacy "+" entries in /etc/passwd',
    'high',
    INDEPENDENT,
    '6.2.2',
    'Remove the lines starting with "+" from /etc/passwd (`vipw`); use NSS (/etc/nsswitch.conf) for directory accounts.',
  ),
  shadowNoPlus: check(
    'shadow-no-legacy-plus',
    'No legacy "+" entries in /etc/shadow',
    'high',
    INDEPENDENT,
    '6.2.3',
    'Remove the lines starting with "+" from /etc/shadow (`vipw -s`).',
  ),
  groupNoPlus: check(
    'group-no-legacy-plus',
    'No legacy "+" entries in /etc/group',
    'high',
    INDEPENDENT,
    '6.2.4',
    'Remove the lines starting with "+" from /etc/group (`vigr`); use NSS (/etc/nsswitch.conf) for directory groups.',
  ),
};

const ALL = Object.values(CHECKS);

// ---------------------------------------------------------------------------
// Talking to the host. Imported functions that return `result` throw on
// `err`; the thrown value's `payload` is the error (here an `access-error`
// variant, `{ tag: 'not-found', val: '…' }`).

/** A `run-error` for the host: thrown values with a `tag` are returned as `err`. */
class RunError {
  constructor(tag, val) {
    this.tag = tag;
    this.val = val;
  }
}

function log(level, message) {
  logWrite(level, message);
}

function emit(chk, status, subject, message, evidence = [], remediation) {
  const finding = {
    checkId: chk.id,
    title: chk.title,
    status,
    severity: chk.severity,
    subject,
    message,
    evidence: evidence.map(([key, value]) => ({ key, value: String(value) })),
    remediation: status === 'fail' ? (remediation ?? chk.remediation) : undefined,
  };
  try {
    hostEmit(finding);
  } catch (e) {
    const err = e?.payload ?? e;
    if (err?.tag === 'limit-reached') {
      throw new RunError('failed', `the host's finding limit (${err.val}) was reached`);
    }
    throw new RunError('failed', `the host refused a finding of ${chk.id}: ${err?.val ?? err}`);
  }
}

const user = (name) => ({ kind: 'user', id: name });
const group = (name) => ({ kind: 'group', id: name });

/**
 * The text of a file, or `{ missing: true }` / `{ error: 'why', denied }`.
 */
function read(path) {
  try {
    return { text: new TextDecoder().decode(readFile(path)) };
  } catch (e) {
    const err = e?.payload;
    if (!err || typeof err.tag !== 'string') throw e;
    if (err.tag === 'not-found') return { missing: true };
    return {
      error: `cannot read ${path} (${err.tag === 'denied' ? 'access denied' : err.tag}): ${err.val}`,
      denied: err.tag === 'denied',
    };
  }
}

// ---------------------------------------------------------------------------
// Parsing colon-separated account databases.

/** `{ line, fields }` of every non-empty, non-comment line. */
function records(text) {
  const out = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.startsWith('#')) return;
    out.push({ line: i + 1, fields: line.split(':') });
  });
  return out;
}

/** Legacy NIS compatibility entries (`+`, `+name`, `+@netgroup`, `-name`). */
const isLegacy = (r) => r.fields[0].startsWith('+') || r.fields[0].startsWith('-');

function parseId(text) {
  return /^[0-9]+$/.test(text) ? Number(text) : undefined;
}

/** Values that occur more than once, with the lines they occur on. */
function duplicates(items, key) {
  const seen = new Map();
  for (const item of items) {
    const k = key(item);
    if (k === undefined) continue;
    if (!seen.has(k)) seen.set(k, []);
    seen.get(k).push(item);
  }
  return [...seen.entries()].filter(([, list]) => list.length > 1);
}

// ---------------------------------------------------------------------------
// The checks.

/** A required file that cannot be read: no verdict (never a pass). */
function unreadable(checks, file, outcome) {
  const message = outcome.missing ? `${file} does not exist` : outcome.error;
  for (const chk of checks) emit(chk, 'error', undefined, message, [['file', file]]);
}

function legacyCheck(chk, file, entries) {
  const plus = entries.filter(isLegacy);
  if (plus.length === 0) {
    emit(chk, 'pass', undefined, `${file} has no legacy "+" or "-" entries`, [['file', file]]);
    return;
  }
  emit(
    chk,
    'fail',
    undefined,
    `${file} has ${plus.length} legacy NIS entr${plus.length === 1 ? 'y' : 'ies'}, which can grant access to directory accounts without their own entry`,
    plus.slice(0, 32).map((r) => [`${file}:${r.line}`, r.fields[0]]),
  );
}

function duplicateCheck(chk, file, entries, key, what) {
  const dups = duplicates(entries, key);
  if (dups.length === 0) {
    emit(chk, 'pass', undefined, `every ${what} in ${file} is unique`, [['file', file]]);
    return;
  }
  emit(
    chk,
    'fail',
    undefined,
    `${dups.length} ${what}${dups.length === 1 ? ' is' : 's are'} used more than once in ${file}: ${dups
      .slice(0, 8)
      .map(([k]) => k)
      .join(', ')}`,
    dups.slice(0, 32).map(([k, list]) => [
      `${what} ${k}`,
      list.map((r) => `${r.fields[0]} (${file}:${r.line})`).join(', '),
    ]),
  );
}

/**
 * One finding per account and per-user check, or (past the budget) only the
 * accounts that fail and one whole-file verdict for the rest.
 */
function perUser(chk, accounts, judge, compact) {
  let passed = 0;
  for (const account of accounts) {
    const { ok, message, evidence, status } = judge(account);
    if (ok && compact) {
      passed += 1;
      continue;
    }
    emit(chk, status ?? (ok ? 'pass' : 'fail'), user(account.name), message, evidence);
  }
  if (compact && passed > 0) {
    emit(chk, 'pass', undefined, `${passed} other accounts meet the requirement`);
  }
}

function assess(skip) {
  const active = (chk) => !skip.has(chk.id);
  for (const chk of ALL) {
    if (!active(chk)) emit(chk, 'skipped', undefined, 'disabled by configuration (`skip`)');
  }
  const on = (...checks) => checks.filter(active);

  const passwd = read(PASSWD);
  const groupFile = read(GROUP);
  const shadow = read(SHADOW);

  // On a system with very many local accounts, per-user checks report only
  // the accounts that fail, and one whole-file verdict for the others.
  const lines = (f) => (f.text === undefined ? 0 : f.text.split('\n').length);
  const perUserChecks = on(
    CHECKS.rootOnlyUid0,
    CHECKS.shadowedPasswords,
    CHECKS.groupsExist,
    CHECKS.noEmptyPasswords,
  ).length;
  const compact = Math.max(lines(passwd), lines(shadow)) * perUserChecks > FINDING_BUDGET;
  if (compact) log('info', 'many accounts: per-user checks report only the accounts that fail');

  // /etc/passwd
  let accounts = [];
  const passwdChecks = on(
    CHECKS.rootOnlyUid0,
    CHECKS.shadowedPasswords,
    CHECKS.noDuplicateUids,
    CHECKS.noDuplicateUserNames,
    CHECKS.passwdNoPlus,
  );
  if (passwd.text === undefined) {
    unreadable([...passwdChecks, ...on(CHECKS.groupsExist)], PASSWD, passwd);
  } else {
    const entries = records(passwd.text);
    accounts = entries
      .filter((r) => !isLegacy(r))
      .map((r) => ({
        name: r.fields[0],
        password: r.fields[1] ?? '',
        uid: parseId(r.fields[2] ?? ''),
        gid: parseId(r.fields[3] ?? ''),
        where: `${PASSWD}:${r.line}`,
        fields: r.fields,
        line: r.line,
      }));
    for (const a of accounts.filter((a) => a.fields.length !== 7 || a.uid === undefined)) {
      log('warn', `${a.where}: malformed entry for ${JSON.stringify(a.name)}`);
    }
    // Only the first entry of a name is the account (the others are
    // reported by the duplicate check).
    const firstOfName = new Map();
    for (const a of accounts) if (!firstOfName.has(a.name)) firstOfName.set(a.name, a);
    const unique = [...firstOfName.values()];

    if (active(CHECKS.rootOnlyUid0)) {
      perUser(
        CHECKS.rootOnlyUid0,
        unique,
        (a) => {
          const ok = (a.uid === 0) === (a.name === 'root');
          const uid = a.uid === undefined ? JSON.stringify(a.fields[2] ?? '') : a.uid;
          let message;
          if (a.name === 'root') {
            message = ok ? 'root has UID 0' : `root has UID ${uid}, not 0`;
          } else {
            message = ok
              ? `${a.name} has UID ${uid}`
              : `${a.name} has UID 0: it is a second superuser`;
          }
          return {
            ok,
            message,
            evidence: [
              ['file', a.where],
              ['observed', `UID ${uid}`],
              ['expected', a.name === 'root' ? 'UID 0' : 'a UID other than 0'],
            ],
          };
        },
        compact,
      );
      if (!firstOfName.has('root')) {
        emit(CHECKS.rootOnlyUid0, 'fail', user('root'), `${PASSWD} has no root account`, [
          ['file', PASSWD],
        ]);
      }
    }
    if (active(CHECKS.shadowedPasswords)) {
      perUser(
        CHECKS.shadowedPasswords,
        unique,
        (a) => {
          const ok = a.password === 'x';
          return {
            ok,
            message: ok
              ? `${a.name}'s password is in /etc/shadow`
              : `${a.name}'s password field in ${PASSWD} is ${a.password === '' ? 'empty' : 'not "x"'}: the password (or its absence) is readable by every user`,
            // Never copy a password hash into the evidence.
            evidence: [
              ['file', a.where],
              ['observed', a.password === 'x' ? 'x' : a.password === '' ? '(empty)' : '(a password hash)'],
              ['expected', 'x'],
            ],
          };
        },
        compact,
      );
    }
    if (active(CHECKS.noDuplicateUids)) {
      duplicateCheck(CHECKS.noDuplicateUids, PASSWD, accounts, (a) => a.uid, 'UID');
    }
    if (active(CHECKS.noDuplicateUserNames)) {
      duplicateCheck(CHECKS.noDuplicateUserNames, PASSWD, accounts, (a) => a.name, 'user name');
    }
    if (active(CHECKS.passwdNoPlus)) legacyCheck(CHECKS.passwdNoPlus, PASSWD, entries);

    // Primary groups need /etc/group too.
    if (active(CHECKS.groupsExist)) {
      if (groupFile.text === undefined) {
        unreadable([CHECKS.groupsExist], GROUP, groupFile);
      } else {
        const gids = new Set(
          records(groupFile.text)
            .filter((r) => !isLegacy(r))
            .map((r) => parseId(r.fields[2] ?? ''))
            .filter((g) => g !== undefined),
        );
        perUser(
          CHECKS.groupsExist,
          unique,
          (a) => {
            const ok = a.gid !== undefined && gids.has(a.gid);
            return {
              ok,
              message: ok
                ? `${a.name}'s primary group ${a.gid} exists`
                : `${a.name}'s primary group ${a.gid ?? JSON.stringify(a.fields[3] ?? '')} is not in ${GROUP}`,
              evidence: [
                ['file', a.where],
                ['observed', `GID ${a.gid ?? a.fields[3] ?? ''}`],
                ['expected', `a GID defined in ${GROUP}`],
              ],
            };
          },
          compact,
        );
      }
    }
  }

  // /etc/group
  const groupChecks = on(CHECKS.shadowGroupEmpty, CHECKS.noDuplicateGids, CHECKS.noDuplicateGroupNames, CHECKS.groupNoPlus);
  if (groupFile.text === undefined) {
    unreadable(groupChecks, GROUP, groupFile);
  } else {
    const entries = records(groupFile.text);
    const groups = entries
      .filter((r) => !isLegacy(r))
      .map((r) => ({
        name: r.fields[0],
        gid: parseId(r.fields[2] ?? ''),
        members: (r.fields[3] ?? '').split(',').filter((m) => m !== ''),
        where: `${GROUP}:${r.line}`,
        fields: r.fields,
        line: r.line,
      }));
    if (active(CHECKS.shadowGroupEmpty)) {
      const shadowGroup = groups.find((g) => g.name === 'shadow');
      if (!shadowGroup) {
        emit(CHECKS.shadowGroupEmpty, 'not-applicable', group('shadow'), `${GROUP} has no shadow group`, [
          ['file', GROUP],
        ]);
      } else if (passwd.text === undefined) {
        emit(CHECKS.shadowGroupEmpty, 'error', group('shadow'), passwd.error ?? `${PASSWD} does not exist`, [
          ['file', PASSWD],
        ]);
      } else {
        const primary = accounts.filter((a) => a.gid !== undefined && a.gid === shadowGroup.gid).map((a) => a.name);
        const ok = shadowGroup.members.length === 0 && primary.length === 0;
        const parts = [];
        if (shadowGroup.members.length > 0) {
          parts.push(`member${shadowGroup.members.length > 1 ? 's' : ''} ${shadowGroup.members.join(', ')}`);
        }
        if (primary.length > 0) parts.push(`primary group of ${primary.join(', ')}`);
        emit(
          CHECKS.shadowGroupEmpty,
          ok ? 'pass' : 'fail',
          group('shadow'),
          ok ? 'the shadow group has no members' : `the shadow group has ${parts.join('; ')}: they can read every password hash`,
          [
            ['file', shadowGroup.where],
            ['observed', parts.length ? parts.join('; ') : '(none)'],
            ['expected', 'no members, and no account with shadow as its primary group'],
          ],
        );
      }
    }
    if (active(CHECKS.noDuplicateGids)) {
      duplicateCheck(CHECKS.noDuplicateGids, GROUP, groups, (g) => g.gid, 'GID');
    }
    if (active(CHECKS.noDuplicateGroupNames)) {
      duplicateCheck(CHECKS.noDuplicateGroupNames, GROUP, groups, (g) => g.name, 'group name');
    }
    if (active(CHECKS.groupNoPlus)) legacyCheck(CHECKS.groupNoPlus, GROUP, entries);
  }

  // /etc/shadow: optional. Without it the checks that need it cannot reach
  // a verdict (never a pass).
  const shadowChecks = on(CHECKS.noEmptyPasswords, CHECKS.shadowNoPlus);
  if (shadow.text === undefined) {
    for (const chk of shadowChecks) {
      if (shadow.missing) {
        emit(
          chk,
          'not-applicable',
          undefined,
          `${SHADOW} does not exist: passwords are not shadowed (see passwd-shadowed-passwords)`,
          [['file', SHADOW]],
        );
      } else {
        emit(chk, 'error', undefined, shadow.error, [['file', SHADOW]]);
      }
    }
  } else {
    const entries = records(shadow.text);
    if (active(CHECKS.noEmptyPasswords)) {
      const seen = new Set();
      const shadowed = entries
        .filter((r) => !isLegacy(r))
        .filter((r) => (seen.has(r.fields[0]) ? false : (seen.add(r.fields[0]), true)));
      perUser(
        CHECKS.noEmptyPasswords,
        shadowed.map((r) => ({ name: r.fields[0], password: r.fields[1] ?? '', where: `${SHADOW}:${r.line}` })),
        (a) => {
          const ok = a.password !== '';
          return {
            ok,
            message: ok
              ? `${a.name} has a password or is locked`
              : `${a.name} has an empty password field: anyone can log in as ${a.name} without a password`,
            // The hash itself is never copied into the evidence.
            evidence: [
              ['file', a.where],
              ['observed', ok ? (/^[!*]/.test(a.password) ? '(locked)' : '(a password hash)') : '(empty)'],
              ['expected', 'a password hash, or "!" / "*" (locked)'],
            ],
          };
        },
        compact,
      );
    }
    if (active(CHECKS.shadowNoPlus)) legacyCheck(CHECKS.shadowNoPlus, SHADOW, entries);
  }
  return { note: undefined };
}

function readSkip() {
  const value = configGet('skip');
  if (value === undefined || value === null) return new Set();
  if (value.tag !== 'text-list') throw new RunError('invalid-config', 'skip: must be a list of check ids');
  const known = new Set(ALL.map((c) => c.id));
  for (const id of value.val) {
    if (!known.has(id)) {
      throw new RunError('invalid-config', `skip: unknown check id ${JSON.stringify(id)} (known: ${[...known].join(', ')})`);
    }
  }
  return new Set(value.val);
}

// ---------------------------------------------------------------------------
// The export: `assessment:plugin/plugin` is the `plugin` object. `run`
// returns `result<run-summary, run-error>`: returning is `ok`, throwing a
// `{ tag, val }` value is `err`.

export const plugin = {
  describe() {
    return {
      name: NAME,
      version: VERSION,
      description:
        'Checks the local accounts in /etc/passwd, /etc/group and /etc/shadow against CIS Debian Linux 12',
      checks: ALL.map(({ id, title, severity, references }) => ({
        id,
        title,
        severity,
        references: references.map((r) => ({ benchmark: r.benchmark, id: r.id, url: undefined })),
      })),
      config: [{ name: 'skip', kind: 'text-list', description: 'check ids not to run' }],
    };
  },

  run() {
    try {
      return assess(readSkip());
    } catch (e) {
      if (e instanceof RunError) throw { tag: e.tag, val: e.val };
      // A bug: report it instead of trapping.
      throw { tag: 'failed', val: `${e?.name ?? 'Error'}: ${e?.message ?? e}` };
    }
  },
};
