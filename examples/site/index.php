<?php
// The demo site's front controller (not served: only here to be watched).
print 'Hello from the File Conveyor demo site';
