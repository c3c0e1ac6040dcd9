// AIFA Workbench in JupyterLab.
// The walltime guard: before Slurm ends the job at its time limit, warn the user (at the lead
// times the hub configured, e.g. 10 and 2 minutes) and save every open document; after the last
// warning keep saving every few seconds, so that late edits reach the disk. It uses JupyterLab's
// commands ('apputils:notify', 'docmanager:save-all') only.
// The status bar item: the session's time left and its cost so far, from the same job status.
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

const STATUS_PATH = 'workbench/job';
const REFRESH_MS = 30000;
const TICK_MS = 2000;
const FINAL_SAVE_EVERY_MS = 10000;

function describe(seconds) {
  const minutes = Math.max(1, Math.round(seconds / 60));
  return minutes === 1 ? 'about 1 minute' : `${minutes} minutes`;
}

function clock(seconds) {
  const minutes = Math.max(0, Math.round(seconds / 60));
  const hours = Math.floor(minutes / 60);
  return hours ? `${hours} h ${String(minutes % 60).padStart(2, '0')} min` : `${minutes} min`;
}

// One job status for both plugins: fetched every REFRESH_MS, listeners told after each answer.
const jobStatus = { job: null, deadline: null, listeners: [], started: false };

function followJob(app) {
  if (jobStatus.started) {
    return;
  }
  jobStatus.started = true;
  const settings = app.serviceManager.serverSettings;
  const url = settings.baseUrl + STATUS_PATH;
  async function refresh() {
    try {
      const headers = settings.token ? { Authorization: `token ${settings.token}` } : {};
      const response = await fetch(url, { credentials: 'same-origin', headers });
      if (!response.ok) {
        return; // not a workbench job, or Slurm did not answer: try again later
      }
      const job = await response.json();
      jobStatus.job = job;
      if (typeof job.seconds_left === 'number') {
        jobStatus.deadline = Date.now() + job.seconds_left * 1000;
      }
      jobStatus.listeners.forEach(listener => listener(job));
    } catch (error) {
      console.warn('AIFA Workbench: no job status', error);
    }
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
}

function startGuard(app) {
  const state = { deadline: null, warnMinutes: [10, 2], warned: new Set(), lastSave: 0 };

  jobStatus.listeners.push(job => {
    if (typeof job.seconds_left === 'number') {
      state.deadline = jobStatus.deadline;
      state.warnMinutes = job.warn_minutes || state.warnMinutes;
    }
  });

  async function saveAll(reason) {
    state.lastSave = Date.now();
    try {
      await app.commands.execute('docmanager:save-all');
    } catch (error) {
      console.warn(`AIFA Workbench walltime guard: saving (${reason}) failed`, error);
    }
  }

  async function tick() {
    if (state.deadline === null) {
      return;
    }
    const left = (state.deadline - Date.now()) / 1000;
    for (const minutes of state.warnMinutes) {
      if (left <= minutes * 60 && !state.warned.has(minutes)) {
        state.warned.add(minutes);
        app.commands.execute('apputils:notify', {
          message: `Your session ends in ${describe(left)} (its time limit). ` +
            'Open notebooks are being saved; save other work now.',
          type: 'warning',
          options: { autoClose: false }
        });
        await saveAll(`${minutes}-minute warning`);
      }
    }
    const last = Math.min(...state.warnMinutes) * 60;
    if (left <= last && Date.now() - state.lastSave >= FINAL_SAVE_EVERY_MS) {
      await saveAll('final minutes');
    }
  }

  followJob(app);
  setInterval(tick, TICK_MS);
}

// "Session: 1 h 52 min left · 0.12 GPU-hours so far" in the status bar; the cost grows between
// two answers at the job's rate per hour.
function startStatusItem(app, statusBar) {
  const item = new Widget();
  item.id = 'aifa-workbench-session';
  item.addClass('jp-StatusBar-TextItem');
  item.node.title = 'This session: its time limit and what it has cost so far (AIFA Workbench)';
  let answeredAt = Date.now();
  function show() {
    const job = jobStatus.job;
    if (!job || jobStatus.deadline === null) {
      return;
    }
    const left = (jobStatus.deadline - Date.now()) / 1000;
    let text = `Session: ${clock(left)} left`;
    if (typeof job.cost_so_far === 'number') {
      const sinceAnswer = (Date.now() - answeredAt) / 3600000;
      const cost = job.cost_so_far + (job.cost_per_hour || 0) * sinceAnswer;
      text += ` · ${cost.toFixed(2)} ${job.cost_unit} so far`;
    }
    item.node.textContent = text;
  }
  jobStatus.listeners.push(() => {
    answeredAt = Date.now();
    show();
  });
  statusBar.registerStatusItem('@aifa-workbench/walltime-guard:session', {
    item,
    align: 'left',
    rank: 0   // always shown: empty until the first answer (isActive is read at registration only)
  });
  followJob(app);
  setInterval(show, TICK_MS * 15);
}

const guard = {
  id: '@aifa-workbench/walltime-guard:plugin',
  description: 'Warns before the job time limit and saves every open notebook.',
  autoStart: true,
  activate: app => startGuard(app)
};

const statusItem = {
  id: '@aifa-workbench/walltime-guard:status',
  description: "Shows the session's time left and cost so far in the status bar.",
  autoStart: true,
  optional: [IStatusBar],
  activate: (app, statusBar) => {
    if (statusBar) {
      startStatusItem(app, statusBar);
    }
  }
};

export default [guard, statusItem];
