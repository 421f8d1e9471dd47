// hypernet_ext: inside webui, webui's own progress bar (percent done, ETA, the job's text) above the Train tab's
// status while one of our jobs runs. Called by the Train tab when it starts following a job; does nothing where
// webui's progressbar.js is not loaded (the standalone app shows the status alone).
function hypernetExtProgress(taskId) {
    if (typeof requestProgress !== 'function' || typeof gradioApp !== 'function') {
        return;
    }
    var status = gradioApp().getElementById('hypernet_ext_train_status');
    if (!status || !status.parentNode) {
        return;
    }
    requestProgress(taskId, status, null, function() {}, null, 120);
}
