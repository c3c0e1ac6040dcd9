// AIFA Workbench walltime guard: before Slurm ends the job at its time limit, warn the user
// (at the lead times the hub configured, e.g. 10 and 2 minutes) and save every open document;
// after the last warning keep saving every few seconds, so that late edits reach the disk.
// No imports: it uses JupyterLab's commands ('apputils:notify', 'docmanager:save-all'), so it
// needs no rebuild when JupyterLab's packages move.

const STATUS_PATH = 'workbench/job';
const REFRESH_MS = 30000;
const TICK_MS = 2000;
const FINAL_SAVE_EVERY_MS = 10000;

function describe(seconds) {
  const minutes = Math.max(1, Math.round(seconds / 60));
  return minutes === 1 ? 'about 1 minute' : `${minutes} minutes`;
}

function startGuard(app) {
  const settings = app.serviceManager.serverSettings;
  const url = settings.baseUrl + STATUS_PATH;
  const state = { deadline: null, warnMinutes: [10, 2], warned: new Set(), lastSave: 0 };

  async function refresh() {
    try {
      const headers = settings.token ? { Authorization: `token ${settings.token}` } : {};
      const response = await fetch(url, { credentials: 'same-origin', headers });
      if (!response.ok) {
        return; // not a workbench job, or Slurm did not answer: try again later
      }
      const job = await response.json();
      if (typeof job.seconds_left === 'number') {
        state.deadline = Date.now() + job.seconds_left * 1000;
        state.warnMinutes = job.warn_minutes || state.warnMinutes;
      }
    } catch (error) {
      console.warn('AIFA Workbench walltime guard: no job status', error);
    }
  }

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

  refresh();
  setInterval(refresh, REFRESH_MS);
  setInterval(tick, TICK_MS);
}

const plugin = {
  id: '@aifa-workbench/walltime-guard:plugin',
  description: 'Warns before the job time limit and saves every open notebook.',
  autoStart: true,
  activate: app => startGuard(app)
};

export default plugin;
