"""Stand-in for webui v1.10.1 modules/shared_state.py: State, the progress of the current job."""
import time


class State:
    """(modules/shared_state.py: State)"""
    skipped = False
    interrupted = False
    stopping_generation = False
    job = ""
    job_no = 0
    job_count = 0
    job_timestamp = "0"
    sampling_step = 0
    sampling_steps = 0
    current_image = None
    id_live_preview = 0
    textinfo = None
    time_start = None

    def interrupt(self):
        """(modules/shared_state.py: State.interrupt)"""
        self.interrupted = True

    def nextjob(self):
        """(modules/shared_state.py: State.nextjob)"""
        self.job_no += 1
        self.sampling_step = 0

    def begin(self, job: str = "(unknown)"):
        """(modules/shared_state.py: State.begin)"""
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.job_no = 0
        self.current_image = None
        self.id_live_preview = 0
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job

    def end(self):
        """(modules/shared_state.py: State.end)"""
        self.job = ""
        self.job_count = 0

    def assign_current_image(self, image):
        """(modules/shared_state.py: State.assign_current_image)"""
        self.current_image = image
        self.id_live_preview += 1
